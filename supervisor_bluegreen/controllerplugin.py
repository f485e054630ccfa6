"""Where ``[ctlplugin:bluegreen]`` finds its factory (users' supervisord configs name this path).

The code is in ctl/controllerplugin.py; this module only keeps the entry point where it was.
"""

from supervisor_bluegreen.ctl.controllerplugin import make_bluegreen_controllerplugin

__all__ = ["make_bluegreen_controllerplugin"]
