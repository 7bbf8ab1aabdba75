"""Reading a command line before the parser does, and turning the parser's errors into one
paragraph that names the key, where its value came from, what was expected and the fix
(jsonargparse reports them as text only, so its messages are matched here; anything not
recognised is passed on collapsed to one line)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import List, Optional, Sequence


def option_values(argv: Sequence[str], *names: str) -> List[str]:
    """The values given to the options ``names`` (``--name VALUE`` or ``--name=VALUE``), in order."""
    values = []
    for i, arg in enumerate(argv):
        if arg in names and i + 1 < len(argv):
            values.append(argv[i + 1])
        elif "=" in arg and arg.split("=", 1)[0] in names:
            values.append(arg.split("=", 1)[1])
    return values


def is_file(text: str) -> bool:
    """``Path(text).is_file()``, false where ``text`` cannot be a path (an inline config longer
    than a file name may be raises OSError there)."""
    try:
        return Path(text).is_file()
    except (OSError, ValueError):
        return False


def config_files(argv: Sequence[str]) -> List[str]:
    """The ``--config`` files given on the command line, in order (later ones override earlier ones);
    inline configs (``--config '{model: {...}}'``) are not files and are left out."""
    return [path for path in option_values(argv, "--config", "-c") if is_file(path)]


def load_yaml(path: str):
    import yaml

    return yaml.safe_load(Path(path).read_text(encoding="utf-8"))



class ConfigError(ValueError):
    """A command line or config file that the parser rejects (unknown key, wrong type, broken YAML),
    described in one paragraph that names the key, what was expected and the fix."""


def _type_phrase(text: str) -> str:
    """``<class 'int'>`` -> ``an integer``; ``typing.Literal['a', 'b']`` -> ``one of 'a', 'b'``."""
    text = text.strip().rstrip(".")
    found = re.fullmatch(r"<class '([\w.]+)'>", text)
    if found:
        name = found.group(1).rsplit(".", 1)[-1]
        return {"NoneType": "null", "int": "an integer", "float": "a number", "str": "a string",
                "bool": "true or false", "dict": "a mapping", "list": "a list"}.get(name, name)
    found = re.fullmatch(r"typing\.Literal\[(.*)\]", text)
    if found:
        return f"one of {found.group(1)}"
    return text


def _join(items: Sequence[str], last: str = "or") -> str:
    items = list(dict.fromkeys(items))
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} {last} {items[-1]}"


def _nested_get(data, key: str):
    """``data["a"]["b"]`` for key ``a.b`` (also through ``init_args``); KeyError when absent."""
    for part in key.split("."):
        if isinstance(data, dict) and part not in data and isinstance(data.get("init_args"), dict):
            data = data["init_args"]
        if not isinstance(data, dict) or part not in data:
            raise KeyError(key)
        data = data[part]
    return data


class ErrorContext:
    """What a parse error message is completed with: the command line, the task, the valid keys."""

    def __init__(self, argv: Sequence[str], task: str, subcommand: str, parser, default_config: str) -> None:
        self.argv, self.task, self.subcommand, self.parser, self.default_config = argv, task, subcommand, parser, default_config

    @property
    def help_command(self) -> str:
        return f"s2s-tasks {self.subcommand} --task {self.task} --help"

    def defaults(self) -> dict:
        try:
            defaults = self.parser.get_defaults()
        except Exception:  # a broken default config: no defaults to offer
            return {}
        return {k: defaults[k] for k in defaults.keys()}

    def valid_keys(self) -> List[str]:
        keys = set()
        for key in self.defaults():
            if "__" in key:
                continue
            keys.add(key)
            keys.add(key.replace(".init_args.", "."))  # model.generation.beam_size as well
        for action in self.parser._actions:
            keys.update(o[2:] for o in action.option_strings if o.startswith("--") and not o.endswith((".help", "+")))
        return sorted(keys - {"help", "config", "print_config"})

    def suggest(self, key: str) -> List[str]:
        """The valid keys closest to ``key``: same parent section first, spelled in the style of
        ``key`` (``model.generation.beam_size``, or with ``.init_args.`` when ``key`` has it)."""
        import difflib

        def style(k: str) -> str:
            return k if ".init_args." in key else k.replace(".init_args.", ".")

        keys = sorted({style(k) for k in self.valid_keys()})
        plain = key.replace(".init_args.", ".")
        parent, last = plain.rsplit(".", 1) if "." in plain else ("", plain)
        for scope in (parent, plain.split(".", 1)[0] if parent else ""):
            names: dict = {}
            for k in keys:
                k_plain = k.replace(".init_args.", ".")
                k_parent = k_plain.rsplit(".", 1)[0] if "." in k_plain else ""
                if k_parent == scope or (scope != parent and k_plain.split(".", 1)[0] == scope):
                    names.setdefault(k_plain.rsplit(".", 1)[-1], []).append(k)
            close = [k for name in difflib.get_close_matches(last, list(names), n=3, cutoff=0.7) for k in names[name]]
            if close:  # one spelling of each key: the one in the style of ``key``
                by_plain = {}
                for k in sorted(close, key=lambda k: (".init_args." in k) != (".init_args." in key)):
                    by_plain.setdefault(k.replace(".init_args.", "."), k)
                return list(by_plain.values())[:3]
        return difflib.get_close_matches(key, keys, n=3, cutoff=0.7)

    def origin(self, key: str) -> Optional[str]:
        """Where the value of ``key`` came from: a flag, a --config file or the task's default config."""
        import yaml

        for arg in self.argv:
            if arg.startswith("--") and arg.split("=", 1)[0][2:] in (key, key.replace(".init_args.", ".")):
                return f"--{key}"
        for path in reversed(config_files(self.argv)):
            try:
                _nested_get(load_yaml(path), key)
                return f"config file {path}"
            except (KeyError, yaml.YAMLError):
                continue
        try:
            _nested_get(load_yaml(self.default_config), key)
            return f"the default config {self.default_config}"
        except (KeyError, yaml.YAMLError, OSError):
            return None

    def broken_config(self) -> Optional[str]:
        """The first --config file that is not valid YAML or not a mapping, described."""
        import yaml

        for path in config_files(self.argv):
            try:
                data = load_yaml(path)
            except yaml.YAMLError as err:
                mark = getattr(err, "problem_mark", None)
                where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
                problem = " ".join(str(getattr(err, "problem", None) or err).split())
                context = getattr(err, "context", None)
                return (
                    f"config file {path} is not valid YAML: {problem}{where}"
                    + (f" ({' '.join(str(context).split())})" if context else "")
                    + ". Fix the syntax there (the YAML of a valid configuration is printed by "
                    f"s2s-tasks {self.subcommand} --task {self.task} --print_config)."
                )
            except UnicodeDecodeError:
                return f"config file {path} is not a text file; pass a YAML file with --config."
            if data is not None and not isinstance(data, dict):
                return (
                    f"config file {path} holds a {type(data).__name__}, not a mapping of sections to values "
                    f"(e.g. trainer: then max_epochs: 5 indented below it); s2s-tasks {self.subcommand} --task {self.task} "
                    "--print_config prints a valid configuration."
                )
        return None

    def describe(self, message: str) -> str:
        """One paragraph for a jsonargparse error ``message``."""
        found = re.match(r"unrecognized arguments: (.*)", message, re.S)
        if found:
            words = found.group(1).split()
            option = next((w for w in words if w.startswith("-")), None)
            if option is None:
                return (f"unexpected argument {words[0]!r}: options are given as --KEY VALUE "
                        f"(all of them: {self.help_command})")
            return self.unknown_key(option.lstrip("-").split("=", 1)[0], flag=True)
        found = re.search(r"does not accept option '([^']+)'", message)
        if found:
            return self.unknown_key(found.group(1))
        found = re.match(r'Parser key "([^"]+)":\s*(.*)', message, re.S)
        if found:
            return self.bad_value(found.group(1), found.group(2))
        if message.startswith("argument subcommand"):
            return (f"{' '.join(message.split())}: the subcommand comes first, as in "
                    f"s2s-tasks {{fit,validate,test,predict}} --task {self.task} [options]")
        if message.startswith(("Problems parsing config", "Unexpected config")):
            broken = self.broken_config()
            if broken:
                return broken
        return f"{' '.join(message.split())} (options: {self.help_command})"

    def unknown_key(self, key: str, flag: bool = False) -> str:
        origin = f"--{key}" if flag else self.origin(key)
        where = f" ({origin})" if origin and origin != f"--{key}" else ""
        what = f"unknown option --{key}" if flag else f"unknown key {key}{where}"
        close = self.suggest(key)
        hint = f"did you mean {_join([('--' if flag else '') + k for k in close])}?" if close else "there is no such key."
        return f"{what} for s2s-tasks {self.subcommand} --task {self.task}: {hint} All keys and their types: {self.help_command}"

    def bad_value(self, key: str, details: str) -> str:
        if key == "config":
            return f"--config: {' '.join(details.split())}; check the path given with --config"
        nested = re.search(r"Option '([^']+)' is not accepted", details)
        if nested:
            given = next((a[2:].split("=", 1)[0] for a in self.argv if a.startswith(f"--{key}.") and a.endswith(f".{nested.group(1)}")), None)
            return self.unknown_key(given or f"{key}.{nested.group(1)}", flag=given is not None)
        value = re.search(r"(?:Given|Got) value: (.*)", details)
        expected = [_type_phrase(t) for t in re.findall(r"Expected a (<class '[^']+'>|typing\.Literal\[.*\])", details)]
        origin = self.origin(key)
        where = f" (from {origin})" if origin else ""
        given = f" is {value.group(1).strip()!r}" if value else " is not valid"
        if not expected:
            return f"{key}{where}{given}: {' '.join(details.split())} (accepted values: {self.help_command})"
        default = self.defaults().get(key)
        example = ""
        if isinstance(default, (int, float, str)) and not isinstance(default, bool):
            example = f", e.g. --{key} {default}" if origin == f"--{key}" else f", e.g. {key}: {default}"
        return (f"{key}{where}{given}, expected {_join(expected)}. Give it a value of that type{example} "
                f"(accepted values: {self.help_command})")
