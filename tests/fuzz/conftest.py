"""Hypothesis settings shared by the fuzz tests.

Budgets are per test (`@settings(max_examples=...)` next to each test) and sized so that the whole folder
runs in about half a minute on 2 cores; `ZPPO_FUZZ_SCALE=20` multiplies them for a longer local hunt. The
profile fixes what every fuzz test needs: no per-example deadline (the first math-verify call imports SymPy
lazily and takes seconds), no example database written into the checkout, and the health checks for slow
or large data generation relaxed (huge strings are generated on purpose).
"""

from hypothesis import HealthCheck, settings

settings.register_profile(
    "zppo-fuzz",
    deadline=None,
    database=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
)
settings.load_profile("zppo-fuzz")

