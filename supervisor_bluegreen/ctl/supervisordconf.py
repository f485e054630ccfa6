"""supervisord.conf as supervisord reads it: the one helper every command that looks into it uses.

supervisor's own parser (``supervisor.options.UnhosedConfigParser``) with supervisord's rules: ``;`` and
``#`` start inline comments, ``%(here)s`` in a value is the folder of the file it is written in,
``%(ENV_NAME)s`` an environment variable, and the files ``[include] files`` names (relative to the main
file's folder, globbed, each pattern's matches in sorted order) add their sections, merged as supervisord
merges them; an include that cannot be opened is passed over, as supervisord does. supervisorctl reads
the main file only (``includes=False``: where ``[ctlplugin:...]`` must be).

These are root's own files: links are followed, and a regular file is read, bounded (``read_conf``):
a FIFO or a huge file is an error that names the file, never a hang.
"""

from __future__ import annotations

import configparser
import glob
import os
import platform

from supervisor.options import UnhosedConfigParser

from supervisor_bluegreen.shared.errors import BluegreenError
from supervisor_bluegreen.shared.store import read_bounded

LIMIT = 1 << 20  # the most bytes one file may hold
CTLPLUGIN_SECTION = "ctlplugin:bluegreen"
CTLPLUGIN = (  # what `supervisorctl bluegreen` needs in supervisord.conf itself
    f"[{CTLPLUGIN_SECTION}]\n"
    "supervisor.ctl_factory = supervisor_bluegreen.controllerplugin:make_bluegreen_controllerplugin\n"
)


class SupervisordConfError(BluegreenError):
    """supervisord's config cannot be read or parsed: ``path`` is the file, ``why`` says what is wrong."""

    def __init__(self, path: str, why: str):
        self.path, self.why = path, why
        super().__init__(f"{path}: {why}")


def read_conf(path: str) -> str:
    """The text of one of root's config files: its links followed (root's folders), a plain file read bounded."""
    return read_bounded(os.path.realpath(path), LIMIT).decode("utf-8", "replace")


class SupervisordConf:
    """The sections and values of a supervisord config, read by ``read``."""

    def __init__(self, path: str, parser: UnhosedConfigParser):
        self.path, self.parser = path, parser

    def sections(self) -> list[str]:
        return self.parser.sections()

    def has(self, section: str, option: str = "") -> bool:
        if not option:
            return self.parser.has_section(section)
        return self.parser.has_option(section, option)

    def get(self, section: str, option: str, default: str | None = None) -> str | None:
        """The value as supervisord reads it (expanded), ``default`` when absent; SupervisordConfError when it
        names an expansion supervisord does not know."""
        if not self.parser.has_option(section, option):
            return default
        try:
            return self.parser.saneget(section, option)
        except ValueError:  # supervisor's message quotes the value: it may be a password
            raise SupervisordConfError(self.file_of(section), _unexpandable(section, option)) from None

    def file_of(self, section: str) -> str:
        """The file ``section`` was read from (the main file or an include)."""
        return self.parser.section_to_file.get(section, self.path)


def _unexpandable(section: str, option: str) -> str:
    return (
        f"[{section}] {option}: supervisord cannot expand its value (known: %(here)s, %(ENV_NAME)s; "
        "a literal % is written %%)"
    )


def _add(parser: UnhosedConfigParser, path: str, required: bool) -> None:
    """Parse ``path`` into ``parser``, its ``%(here)s`` expanded to its own folder (supervisord's read_config)."""
    try:
        text = read_conf(path)
    except OSError as exc:
        if not required:
            return
        raise SupervisordConfError(path, f"cannot read: {exc.strerror or exc}") from None
    before = set(parser.sections())
    try:
        parser.read_string(text, source=path)
    except configparser.Error as exc:
        raise SupervisordConfError(path, " ".join(str(exc).split())) from None
    for section in set(parser.sections()) - before:
        parser.section_to_file[section] = path
    parser.expand_here(os.path.dirname(os.path.abspath(path)))


def has_ctlplugin(path: str) -> bool:
    """Whether supervisorctl finds ``[ctlplugin:bluegreen]`` in ``path``: in the main file, it reads no include."""
    return read(path, includes=False).has(CTLPLUGIN_SECTION)


def read(path: str, includes: bool = True) -> SupervisordConf:
    """supervisord's config at ``path`` (with the files its ``[include]`` names unless ``includes`` is False).

    SupervisordConfError when the main file cannot be read, or it or an include does not parse.
    """
    parser = UnhosedConfigParser()
    parser.expansions = {f"ENV_{key}": value for key, value in os.environ.items()}
    _add(parser, path, required=True)
    conf = SupervisordConf(path, parser)
    if not includes or not parser.has_section("include"):
        return conf
    here = os.path.dirname(os.path.abspath(path))
    try:
        files = parser.saneget("include", "files", "", expansions={"here": here, "host_node_name": platform.node()})
    except ValueError:
        raise SupervisordConfError(path, _unexpandable("include", "files")) from None
    for pattern in files.split():
        for name in sorted(glob.glob(os.path.join(here, pattern))):
            _add(parser, name, required=False)
    return conf
