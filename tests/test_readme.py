"""The README's research-code example runs as written (with fewer iterations)."""

import pathlib
import re

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def test_readme_example_runs():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    example = blocks[0]
    assert "range(1000)" in example, "the README example changed: update this test"
    namespace = {}
    exec(compile(example.replace("range(1000)", "range(3)"), str(README), "exec"), namespace)
    assert int(namespace["state"].step) == 3
    assert float(namespace["metrics"]["nonfinite"]) == 0.0
