"""Where ``[rpcinterface:bluegreen]`` finds its factory (users' supervisord configs name this path).

The code is in supervisord/rpcinterface.py; this module only keeps the entry point where it was.
"""

from supervisor_bluegreen.supervisord.rpcinterface import make_bluegreen_rpcinterface

__all__ = ["make_bluegreen_rpcinterface"]
