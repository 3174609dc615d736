import os
import stat
from pathlib import Path

import pytest

from ishowttsd.config import Config, ConfigError, load_config, read_secret
from ishowttsd.daemon import Daemon

REPO = Path(__file__).resolve().parent.parent


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "c.toml"
    p.write_text(text, encoding="utf-8")
    return p


def test_defaults_work_without_a_config():
    cfg = load_config(None)
    assert cfg.engine.default == "espeak"
    assert cfg.moderation.max_chars == 80
    assert cfg.sources == [] and cfg.sinks == []


def test_shipped_configs_are_valid():
    for p in (REPO / "config").glob("*.toml"):
        cfg = load_config(p)
        Daemon(cfg, Path("/tmp/unused.sock")).build()


def test_unknown_key_names_file_key_and_fix(tmp_path):
    p = write(tmp_path, "[moderation]\nmax_char = 10\n")
    with pytest.raises(ConfigError) as e:
        load_config(p)
    msg = str(e.value)
    assert str(p) in msg and "moderation.max_char" in msg and "unknown key" in msg


def test_bad_value_names_key_and_value(tmp_path):
    p = write(tmp_path, "[moderation]\nmax_chars = -3\n")
    with pytest.raises(ConfigError) as e:
        load_config(p)
    assert "moderation.max_chars" in str(e.value) and "-3" in str(e.value)


def test_toml_syntax_error_has_line(tmp_path):
    p = write(tmp_path, "[daemon]\nsocket = \n")
    with pytest.raises(ConfigError) as e:
        load_config(p)
    assert "not valid TOML" in str(e.value) and "line 2" in str(e.value)


def test_missing_file_says_how_to_start(tmp_path):
    with pytest.raises(ConfigError, match="example.toml"):
        load_config(tmp_path / "nope.toml")


def test_unknown_source_type_lists_known_types(tmp_path):
    cfg = load_config(write(tmp_path, '[[sources]]\ntype = "kick"\n'))
    with pytest.raises(ConfigError) as e:
        Daemon(cfg, tmp_path / "s.sock").build()
    assert "sources[0].type" in str(e.value) and "replay" in str(e.value)


def test_plugin_settings_are_validated_with_their_location(tmp_path):
    cfg = load_config(write(tmp_path, '[[sources]]\ntype = "replay"\npath = "x.jsonl"\nspeed = "fast"\n'))
    with pytest.raises(ConfigError) as e:
        Daemon(cfg, tmp_path / "s.sock").build()
    assert "sources[0].speed" in str(e.value)
    cfg = load_config(write(tmp_path, '[[sinks]]\ntype = "file"\ndirectory = "o"\ncolour = "red"\n'))
    with pytest.raises(ConfigError, match=r"sinks\[0\]\.colour: unknown key"):
        Daemon(cfg, tmp_path / "s.sock").build()


def test_engine_tables_are_validated(tmp_path):
    cfg = load_config(write(tmp_path, "[engine.espeak]\nrate = 5000\n"))
    with pytest.raises(ConfigError, match="engine.espeak.rate"):
        Daemon(cfg, tmp_path / "s.sock").build()
    cfg = load_config(write(tmp_path, '[engine]\ndefault = "nosuch"\n'))
    with pytest.raises(ConfigError, match="unknown engine 'nosuch'"):
        Daemon(cfg, tmp_path / "s.sock").build()


def test_relative_paths_are_relative_to_the_config_file(tmp_path):
    cfg = load_config(write(tmp_path, "[daemon]\nstate_dir = \"state\"\n"))
    assert cfg.resolve("voices/a.wav") == tmp_path.resolve() / "voices/a.wav"
    assert cfg.state_dir() == tmp_path.resolve() / "state"


def test_state_dir_respects_xdg_and_systemd(monkeypatch, tmp_path):
    monkeypatch.delenv("STATE_DIRECTORY", raising=False)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    assert Config().state_dir() == tmp_path / "ishowtts"
    monkeypatch.setenv("STATE_DIRECTORY", "/var/lib/ishowtts")  # StateDirectory=ishowtts
    assert Config().state_dir() == Path("/var/lib/ishowtts")


def test_template_with_unknown_field_is_refused(tmp_path):
    cfg = load_config(write(tmp_path, '[moderation.templates]\ndanmaku = "{usr}: {text}"\n'))
    with pytest.raises(ConfigError, match="usr"):
        Daemon(cfg, tmp_path / "s.sock")


def test_read_secret_from_env_and_file_never_echoes_value(tmp_path, monkeypatch):
    monkeypatch.setenv("MY_TOKEN", "s3cret\n")
    assert read_secret(None, "MY_TOKEN", "twitch token") == "s3cret"
    f = tmp_path / "tok"
    f.write_text("from-file\n")
    f.chmod(stat.S_IRUSR | stat.S_IWUSR)
    assert read_secret(str(f), None, "twitch token") == "from-file"
    assert read_secret(None, None, "x") is None
    monkeypatch.delenv("MY_TOKEN")
    with pytest.raises(ConfigError, match="MY_TOKEN is not set"):
        read_secret(None, "MY_TOKEN", "twitch token")
    with pytest.raises(ConfigError, match="cannot read"):
        read_secret(str(tmp_path / "missing"), None, "twitch token")


def test_check_config_cli(tmp_path):
    import subprocess
    import sys

    bad = write(tmp_path, "[moderation]\nmax_chars = 0\n")
    r = subprocess.run([sys.executable, "-m", "ishowttsd", "--config", str(bad), "--check-config"],
                       capture_output=True, text=True, env={**os.environ})  # fmt: skip
    assert r.returncode == 78
    assert "moderation.max_chars" in r.stderr
    r = subprocess.run([sys.executable, "-m", "ishowttsd", "--config", str(REPO / "config/demo.toml"), "--check-config"],
                       capture_output=True, text=True)  # fmt: skip
    assert r.returncode == 0, r.stderr
