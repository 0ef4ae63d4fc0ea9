"""Fuzz tier, configs: >= 10,000 structured mutations of configs/default.yaml (and of
--set overrides) loaded in a limited subprocess (tests/fuzz_worker.py); only ConfigError
may come out, and what is accepted reads back the same from ``dump_config``. A sample of
the mutated configs also goes through ``segcam run`` itself: never a traceback or exit 1.

Mutations know the schema: values at and just past each key's declared range and its
off value, wrong types, NaN/inf, huge and long values, NUL bytes, missing and unknown
keys, sections replaced by scalars; and the text: hostile YAML tokens in place of a
value (``!!bool maybe``, ``0x`` + 300 digits, undefined aliases, deep nesting, tags),
lines deleted, duplicated or re-indented, and cuts.
"""

from __future__ import annotations

import copy
import functools
import json
import os
import random
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import fuzz_support
import pytest
import yaml

from segcam import config as C

pytestmark = pytest.mark.fuzz

CASES_PER_SEED = 5000
ROUNDTRIP = 0.1  # share of cases whose accepted config is also dumped and read back
CLI_SAMPLES = 12

DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
BASE: Dict[str, Any] = yaml.safe_load((C.configs_dir() / "default.yaml").read_text())

HOSTILE_VALUES: List[Any] = [
    10**30, 2**63, -(2**63), -1, 0, 1, 0.5, 1e-300, 1e300, float("nan"), float("inf"),
    -float("inf"), "", "x" * 300, "y" * 5000, "a\x00b", "\u00fc" * 10, "1e3", "0x1f", [],
    [1] * 100, [[[]]], {}, {"a": 1}, None, True, False, "auto", "none", "demo",
]  # fmt: skip
TOKENS = [
    "!!bool maybe", "!!int abc", "!!float x", "!!binary '%%%'", "!!timestamp 2001-99-99",
    "!!python/object:os.system", "!!str", "!!map [1]", "0x" + "f" * 300, "9" * 5000,
    "1e-3", "-2E+5", ".nan", "-.inf", "&a [1, 2]", "*undefined", "[" * 100, "{a: ",
    '"unterminated', "\t1", "? [a]", "<<: *x", "0o777", "0b101", "1_000", "12:30:00",
    "~", "yes", "Off", "'a\\0b'", '"\\x00"', "- - - -", "|", ">-", "!<tag:x> 1",
]  # fmt: skip


def _leaves(d: Dict[str, Any], prefix: str = "") -> List[str]:
    out = []
    for k, v in d.items():
        path = f"{prefix}{k}"
        if isinstance(v, dict):
            out += _leaves(v, path + ".")
        else:
            out.append(path)
    return out


LEAVES = _leaves(BASE)


@functools.lru_cache(maxsize=None)
def _bounds(path: str) -> Optional[C.Bounds]:
    cls: Any = C.Config
    parts = path.split(".")
    for part in parts[:-1]:
        hints = C._schema(cls)[0]
        if part not in hints or not C.dataclasses.is_dataclass(hints[part]):
            return None
        cls = hints[part]
    return C.field_bounds(cls, parts[-1])


def _value_for(rng: random.Random, path: str) -> Any:
    b = _bounds(path)
    if b is not None and b.lo is not None and rng.random() < 0.5:
        lo, hi = b.lo, b.hi
        step = 1 if isinstance(lo, int) and isinstance(hi, int) else (hi - lo) * 1e-6 or 1e-6
        picks = [lo, hi, lo - step, hi + step, (lo + hi) / 2, hi * 10 + 1]
        if b.off is not None:
            picks.append(b.off)
        return rng.choice(picks)
    if b is not None and b.max_len is not None and rng.random() < 0.3:
        return "z" * rng.choice([b.max_len, b.max_len + 1])
    return rng.choice(HOSTILE_VALUES)


def _set(d: Dict[str, Any], path: str, value: Any) -> None:
    parts = path.split(".")
    for part in parts[:-1]:
        nxt = d.get(part)
        if not isinstance(nxt, dict):
            nxt = {}
            d[part] = nxt
        d = nxt
    d[parts[-1]] = value


def _drop(d: Dict[str, Any], path: str) -> None:
    parts = path.split(".")
    for part in parts[:-1]:
        d = d.get(part)
        if not isinstance(d, dict):
            return
    d.pop(parts[-1], None)


def _mutate_data(rng: random.Random, data: Dict[str, Any]) -> str:
    op = rng.choices(["value", "drop", "unknown", "section"], [8, 1, 1, 1])[0]
    path = rng.choice(LEAVES)
    if op == "value":
        value = _value_for(rng, path)
        _set(data, path, value)
        return f"{path}={value!r}"[:80]
    if op == "drop":
        _drop(data, path)
        return f"drop {path}"
    if op == "unknown":
        _set(data, path.rsplit(".", 1)[0] + "." + rng.choice(["treshold", "x", "0", "widht"]), 1)
        return f"unknown key near {path}"
    section = rng.choice(list(BASE))
    data[section] = rng.choice([None, 1, "x", [], [1, 2]])
    return f"section {section}={data[section]!r}"


def _mutate_text(rng: random.Random, text: str) -> Tuple[str, str]:
    lines = text.split("\n")
    op = rng.choice(["token", "token", "token", "delete", "duplicate", "indent", "cut", "tab"])
    i = rng.randrange(len(lines))
    if op == "token":
        token = rng.choice(TOKENS)
        if ":" in lines[i]:
            key = lines[i].split(":", 1)[0]
            lines[i] = f"{key}: {token}"
        else:
            lines.insert(i, f"{'  ' * rng.randint(0, 3)}k: {token}")
        return "\n".join(lines), f"token {token[:24]!r} at line {i + 1}"
    if op == "delete":
        del lines[i]
    elif op == "duplicate":
        lines.insert(i, lines[i])
    elif op == "indent":
        lines[i] = " " * rng.choice([1, 3, 4, 7]) + lines[i]
    elif op == "tab":
        lines[i] = "\t" + lines[i]
    else:
        return text[: rng.randrange(len(text) + 1)], "cut"
    return "\n".join(lines), f"{op} line {i + 1}"


def _special(rng: random.Random) -> Tuple[str, str]:
    """Rare, costly shapes: alias fan-out, deep nesting."""
    if rng.random() < 0.5:
        levels = rng.randint(2, 6)
        lines = ["x:", "  a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
        for i in range(1, levels):
            lines.append(f"  a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]")
        return "\n".join(lines) + f"\ninput:\n  width: *a{levels - 1}\n", f"laughs {levels}"
    depth = rng.randint(20, 60)
    return "input:\n  uri: " + "[" * depth + "]" * depth + "\n", f"nesting {depth}"


def generate(seed: int, n: int) -> Tuple[List[Tuple[str, Any, Any]], List[str]]:
    """``n`` config cases from ``seed``: files (data and text mutations) and --set lists."""
    rng = random.Random(seed)
    cases: List[Tuple[str, Any, Any]] = []
    descriptions: List[str] = []
    for _ in range(n):
        roll = rng.random()
        if roll < 0.15:
            sets = []
            for _ in range(rng.randint(1, 3)):
                path = rng.choice(LEAVES + ["x", "input", "a..b", "input.nope"])
                raw = rng.choice(TOKENS) if rng.random() < 0.4 else str(_value_for(rng, path))
                sets.append(f"{path}={raw}")
            cases.append(("config", None, {"overrides": sets, "roundtrip": rng.random() < 0.3}))
            descriptions.append("--set " + " ".join(s[:40] for s in sets))
            continue
        if roll < 0.152:
            text, desc = _special(rng)
            cases.append(("config", text, {}))
            descriptions.append(desc)
            continue
        sections = rng.sample(list(BASE), rng.randint(1, 3))
        data = {s: copy.deepcopy(BASE[s]) for s in sections}
        steps = [_mutate_data(rng, data) for _ in range(rng.choice([0, 1, 1, 2, 3]))]
        text = yaml.dump(data, Dumper=DUMPER, sort_keys=False, allow_unicode=rng.random() < 0.5)
        if rng.random() < 0.35:
            text, step = _mutate_text(rng, text)
            steps.append(step)
        cases.append(("config", text, {"roundtrip": rng.random() < ROUNDTRIP}))
        descriptions.append(f"{'+'.join(sections)}: " + "; ".join(steps))
    return cases, descriptions


def test_fuzz_configs() -> None:
    results, _ = fuzz_support.run_tier("config", generate, CASES_PER_SEED, case_s=4.0)
    accepted = sum(r["result"] == "ok" for r in results)
    assert 0.05 * len(results) < accepted < 0.95 * len(results), accepted  # both sides reached


def _cli_samples() -> List[Tuple[str, str]]:
    """Mutated config files for the CLI, half the loader accepts and half it refuses."""
    rng = random.Random(fuzz_support.FIXED_SEED + 1)
    ok: List[Tuple[str, str]] = []
    bad: List[Tuple[str, str]] = []
    tries = 0
    while (len(ok) < CLI_SAMPLES // 2 or len(bad) < CLI_SAMPLES // 2) and tries < 5000:
        tries += 1
        data = copy.deepcopy(BASE)
        steps = [_mutate_data(rng, data) for _ in range(rng.randint(1, 3))]
        text = yaml.safe_dump(data, sort_keys=False)
        if rng.random() < 0.3:
            text, step = _mutate_text(rng, text)
            steps.append(step)
        try:
            C.parse_config(text, "sample.yaml")
            target = ok
        except C.ConfigError:
            target = bad
        if len(target) < CLI_SAMPLES // 2:
            target.append((text, "; ".join(steps)))
    return ok + bad


# Environment-facing keys are pinned so that the sample cannot open cameras, windows,
# ports that other tests use, or the operator's directories; everything else is mutated.
PINNED = [
    "input.uri=demo", "output.uris=[none]", "publish.bind=['tcp://127.0.0.1:*']",
    "thermal.sensor=none", "--frames", "2",
]  # fmt: skip


def test_fuzzed_configs_through_segcam_run(tmp_path: Path, selfie_onnx: Path) -> None:
    env = dict(os.environ)
    env.pop("DISPLAY", None)
    env["SEGCAM_CACHE"] = str(tmp_path / "cache")
    failures: List[str] = []
    codes: List[int] = []
    for i, (text, desc) in enumerate(_cli_samples()):
        f = tmp_path / f"c{i}.yaml"
        f.write_text(text)
        args = [sys.executable, "-m", "segcam", "run", "--config", str(f)]
        args += ["--set", f"model.path={selfie_onnx}", "--set", f"service.state_dir={tmp_path}"]
        for p in PINNED:
            args += [p] if p.startswith("--") or p.isdigit() else ["--set", p]
        proc = subprocess.run(args, cwd=tmp_path, capture_output=True, text=True, env=env,
                              timeout=300)  # fmt: skip
        codes.append(proc.returncode)
        if proc.returncode in (1,) or proc.returncode < 0 or "Traceback" in proc.stderr:
            failures.append(f"[{desc}] exit {proc.returncode}: {proc.stderr[-1500:]}")
    print(f"segcam run exit codes of {len(codes)} fuzzed configs: {codes}")
    assert not failures, json.dumps(failures, indent=1)
    assert 0 in codes and 2 in codes  # accepted ones ran, refused ones exited 2
