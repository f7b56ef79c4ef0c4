"""Demo world generator and importers of real data sets.

:func:`seeds.demo.seed_demo_world` builds the demo world (docs/DEMO.md describes it).
"""
