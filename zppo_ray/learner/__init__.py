"""The DeepSpeed policy learner (Ray-free), its vision-language inputs, and DeepSpeed's environment."""
