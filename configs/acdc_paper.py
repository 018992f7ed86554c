"""The paper's exact settings (Sander, de Vos, Išgum, SPIE MI 2021): the base config as it is.

See configs/default.py for what they are; batch size 16 and 200k steps are our
choice (the paper gives neither).
"""

import ml_collections

from jaxsr.configs import default


def get_config() -> ml_collections.ConfigDict:
    return default.get_config()
