"""The options every module of the collection takes to reach the host's supervisord."""


class ModuleDocFragment:
    DOCUMENTATION = r"""
options:
  supervisord_conf:
    description:
      - The host's supervisord config; its C([supervisorctl]) section gives the server URL and credentials, as
        supervisorctl reads them.
    type: path
    default: /etc/supervisor/supervisord.conf
  serverurl:
    description: supervisord's server (C(unix:///path) or C(http://127.0.0.1:9001)), instead of the config's.
    type: str
  username:
    description: The server's username, instead of the config's.
    type: str
  password:
    description: The server's password, instead of the config's.
    type: str
  who:
    description: Who asks, as the app's history records it.
    type: str
    default: ansible
"""
