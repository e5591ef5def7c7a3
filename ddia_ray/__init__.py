"""ddia-ray: the patterns of *Designing Data-Intensive Applications* as building blocks on Ray.

Start with :mod:`ddia_ray.runtime` (cores, shells, networks, the nemesis), then the patterns:
:mod:`ddia_ray.clocks`, :mod:`ddia_ray.membership`, :mod:`ddia_ray.resilience`,
:mod:`ddia_ray.balancing`. Every error raised on purpose is in :mod:`ddia_ray.errors`.
"""

__version__ = "0.1.0"
__all__ = ["__version__"]
