"""zppo_ray: Zone of Proximal Policy Optimization on Ray."""

__version__ = "0.1.0"
