"""The one way root renders a jinja2 template: the nginx site, and the programs file and app config of init.

One environment for all of them. Sandboxed: a template is text and never reaches Python (root renders it,
and the site template's path is a setting). StrictUndefined: a name the template uses and the caller did
not pass is an error, never an empty string. No autoescape (nginx and INI files, not HTML): what reaches
them is checked before (config validation, init's plain values). No trim_blocks: a tag's own line break
stays in the output unless the tag ends with ``-%}``; the file's last newline is kept. A template is one
file, read whole: no loader, so no include or extends of another file.

The caller decides every value (paths, argv, which optional lines appear) and passes plain values; the
template only lays them out.
"""

from __future__ import annotations

import os

import jinja2
from jinja2.sandbox import SandboxedEnvironment

from supervisor_bluegreen.shared.config import TEMPLATE_DIR

ENVIRONMENT = SandboxedEnvironment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True, autoescape=False)


def render_file(path: str, **values: object) -> str:
    """The template at ``path`` rendered with ``values``."""
    with open(path, encoding="utf-8") as f:
        template = ENVIRONMENT.from_string(f.read())
    return template.render(**values)


def render(name: str, **values: object) -> str:
    """The package's template ``name`` (in supervisor_bluegreen/templates) rendered with ``values``."""
    return render_file(os.path.join(TEMPLATE_DIR, name), **values)


def package_templates() -> list[str]:
    """The names of the templates the package ships."""
    return sorted(n for n in os.listdir(TEMPLATE_DIR) if n.endswith(".j2"))
