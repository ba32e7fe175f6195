"""A home folder that cannot hold the LM response cache (a regular file, a read-only disk): making the LM is a
`ConfigError` naming the folder and the settings to change, not a raw OSError from DSPy's disk cache."""

from __future__ import annotations

import pytest

from persona_agent.core.config import Settings
from persona_agent.core.errors import ConfigError
from persona_agent.lm.models import make_lm


def test_a_home_that_is_a_regular_file_is_a_config_error_naming_the_cache_folder(tmp_path, monkeypatch):
    home = tmp_path / "home"
    home.write_text("not a folder")
    monkeypatch.setenv("PERSONA_AGENT_HOME", str(home))
    with pytest.raises(ConfigError, match="PERSONA_AGENT_CACHE_DIR") as caught:
        make_lm("openai/gpt-4o-mini", settings=Settings())  # a LiteLLM spec: nothing is loaded or called
    assert str(home / "cache" / "dspy") in str(caught.value)
    assert home.read_text() == "not a folder"
