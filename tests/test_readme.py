"""The README's code runs as a newcomer would paste it."""

import re
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_python_blocks_run(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # the weights example writes files into the working directory
    blocks = python_blocks()
    assert len(blocks) >= 2
    namespace: dict = {}
    exec("import torchvision", namespace)
    for block in blocks:
        exec(compile(block, str(README), "exec"), namespace)
    out = capsys.readouterr().out
    assert "853018" in out
    assert "[512, 1024, 2048] [8, 16, 32]" in out
    assert (tmp_path / "resnet50.safetensors").is_file()


def test_readme_starts_with_the_two_commands():
    text = README.read_text()
    first_block = re.search(r"```bash\n(.*?)```", text, flags=re.S).group(1)
    assert [line.split("#")[0].strip() for line in first_block.strip().splitlines()] == ["make demo", "make test"]
