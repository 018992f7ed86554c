"""Named configs, installed as the package `jaxsr.configs` (pyproject maps this folder).

Each module's get_config() returns an ml_collections.ConfigDict. `default` defines
every key once; the others start from it and change a few keys. Load one by name
(`jaxsr train --config acdc_followup`) or give a path to any .py file with a
get_config(); such a file may start from `jaxsr.configs.default` too.
"""
