"""Every rejection of a sweep spec goes through HTTP as a 422 whose detail names the field
(``loc``) and whose message names the field and the allowed values; oversized bodies are 413
and malformed bodies are 422, never 500."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from kernelwatch.core.settings import Settings
from tests.api_support import auth, decode_spec, make_client, new_token


@pytest.fixture
def client(kw_env: Settings) -> Iterator[TestClient]:
    c = make_client()
    c.headers.update(auth(new_token()))
    yield c


def _params(**kw: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"batch_size": [1], "kv_len": [128], "num_qo_heads": [8],
                            "num_kv_heads": [2], "head_dim": [64]}
    base.update(kw)
    return base


CASES: list[tuple[str, dict[str, Any], list[str], list[str]]] = [
    # id, spec overrides, expected loc (after "body"), substrings of the message
    ("unknown kernel", {"kernel": "paged_decode"}, ["kernel"],
     ["paged_decode", "allowed", "batch_decode", "mla_decode"]),
    ("missing kernel", {"kernel": None}, ["kernel"], ["kernel", "required", "single_decode"]),
    ("unknown backend", {"backends": ["fa9"]}, ["backends"],
     ["backends", "fa9", "allowed", "torch-sdpa", "fa2"]),
    ("no backend", {"backends": []}, ["backends"],
     ["backends", "at least 1", "allowed", "torch-sdpa"]),
    ("no target", {"targets": []}, ["targets"], ["targets", "at least 1", "allowed", "cpu"]),
    ("flashinfer without version", {"backends": ["fa2"]}, ["flashinfer_versions"],
     ["flashinfer_versions", "required"]),
    ("bad version", {"backends": ["fa2"], "flashinfer_versions": ["latest"]},
     ["flashinfer_versions"], ["flashinfer_versions", "'latest'", "not a version"]),
    ("unknown target", {"targets": ["tpu-v5"]}, ["targets"],
     ["targets", "tpu-v5", "allowed", "cpu", "hopper", "h100"]),
    ("flashinfer on cpu", {"backends": ["fa2"], "flashinfer_versions": ["0.6.18.post1"]},
     ["targets"], ["targets", "'cpu'", "fa2", "hopper", "torch-sdpa"]),
    ("unknown dtype", {"params": _params(dtype=["float32"])}, ["params", "dtype"],
     ["params.dtype", "float32", "allowed: float16, bfloat16"]),
    ("unknown parameter", {"params": _params(num_layers=[2])}, ["params"],
     ["num_layers", "allowed", "kv_len", "batch_size"]),
    ("parameter of another kernel", {"params": _params(causal=[True])}, ["params"],
     ["causal", "batch_decode", "allowed"]),
    ("zero batch", {"params": _params(batch_size=[0])}, ["params", "batch_size"],
     ["params.batch_size", "0", "integers from 1 to 16384"]),
    ("negative kv_len", {"params": _params(kv_len=[-5])}, ["params", "kv_len"],
     ["params.kv_len", "-5", "integers from 1 to"]),
    ("absurd kv_len", {"params": _params(kv_len=[10**12])}, ["params", "kv_len"],
     ["params.kv_len", "out of range", "integers from 1 to 1048576"]),
    ("non-integer size", {"params": _params(batch_size=["many"])}, ["params", "batch_size"],
     ["params.batch_size", "not an integer"]),
    ("head_dim not offered", {"params": _params(head_dim=[96])}, ["params", "head_dim"],
     ["params.head_dim", "allowed: 64, 128, 256"]),
    ("unknown positional encoding", {"params": _params(pos_encoding_mode=["ROPE"])},
     ["params", "pos_encoding_mode"],
     ["params.pos_encoding_mode", "'ROPE'", "allowed: NONE, ROPE_LLAMA, ALIBI"]),
    ("positional encoding of MLA", {"kernel": "mla_decode",
                                    "params": {"batch_size": [1], "kv_len": [128],
                                               "pos_encoding_mode": ["NONE"]}},
     ["params"], ["pos_encoding_mode", "mla_decode", "allowed"]),
    ("heads not a multiple", {"params": _params(num_qo_heads=[12], num_kv_heads=[8])},
     ["params"], ["num_qo_heads (12)", "multiple", "num_kv_heads (8)"]),
    ("grid over 10,000", {"backends": ["torch-sdpa"],
                          "params": _params(batch_size=list(range(1, 102)),
                                            kv_len=list(range(1, 101)))},
     ["params"], ["10100 points", "at most 10000"]),
    ("too big for cpu", {"params": _params(batch_size=[4096], kv_len=[65536])}, ["params"],
     ["point 0", "batch_size=4096", "8 GiB", "'cpu'"]),
    ("too big for hopper", {"targets": ["hopper"],
                            "params": _params(batch_size=[16384], kv_len=[1 << 20])},
     ["params"], ["point 0", "141 GiB", "'hopper'"]),
    ("empty grid", {"params": _params(kv_len=[])}, ["params", "kv_len"],
     ["params.kv_len", "empty", "no points"]),
    ("unknown clock mode", {"timing": {"clock": "turbo"}}, ["timing", "clock"],
     ["timing.clock", "boost", "sustained"]),
    ("too few iterations", {"timing": {"iterations": 5}}, ["timing", "iterations"],
     ["timing.iterations", "30"]),
    ("too many repeats", {"timing": {"repeats": 11}}, ["timing", "repeats"],
     ["timing.repeats", "10"]),
    ("too few samples per repeat", {"timing": {"iterations": 30, "repeats": 4}}, ["timing"],
     ["timing.iterations=30", "timing.repeats=4", "iterations >= 10 x repeats"]),
    ("warm-up too long", {"timing": {"warmup_ms": 5000}}, ["timing", "warmup_ms"],
     ["timing.warmup_ms", "2000"]),
    ("clock floor over 1", {"timing": {"clock_floor": 1.5}}, ["timing", "clock_floor"],
     ["timing.clock_floor", "1"]),
    ("unknown top-level field", {"gpu": "h100"}, ["gpu"],
     ["unknown field 'gpu'", "allowed", "kernel", "targets"]),
    ("unknown timing method", {"timing": {"method": "wallclock"}}, ["timing", "method"],
     ["timing.method", "cuda_graph", "cupti", "cuda_event"]),
    ("unknown timing field", {"timing": {"iters": 30}}, ["timing", "iters"],
     ["unknown field 'iters'", "warmup", "iterations"]),
]


@pytest.mark.parametrize(("overrides", "loc", "words"), [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_rejection_names_field_and_allowed_values(
    client: TestClient, overrides: dict[str, Any], loc: list[str], words: list[str]
) -> None:
    spec = decode_spec(**overrides)
    spec = {k: v for k, v in spec.items() if v is not None}
    r = client.post("/v1/jobs", json=spec)
    assert r.status_code == 422, r.text
    detail = r.json()["detail"]
    assert isinstance(detail, list) and detail
    err = detail[0]
    assert err["loc"] == ["body", *loc]
    for w in words:
        assert w in err["msg"], (w, err["msg"])
    # Nothing was stored for a rejected spec.
    assert client.get("/v1/jobs").json()["total"] == 0


def test_valid_spec_is_accepted_as_json_and_yaml(client: TestClient) -> None:
    assert client.post("/v1/jobs", json=decode_spec()).status_code == 201
    yaml_text = """
name: decode-yaml
kernel: single_decode
backends: [torch-sdpa]
targets: [cpu]
params:
  kv_len: [512, 2048]
  num_qo_heads: 32
  num_kv_heads: 8
"""
    r = client.post("/v1/jobs", content=yaml_text, headers={"Content-Type": "application/yaml"})
    assert r.status_code == 201, r.text
    assert r.json()["total_points"] == 2
    assert r.json()["spec"]["params"]["num_qo_heads"] == [32]


def test_body_over_limit_is_413(client: TestClient) -> None:
    big = b'{"name": "' + b"x" * (1 << 20) + b'"}'
    r = client.post("/v1/jobs", content=big, headers={"Content-Type": "application/json"})
    assert r.status_code == 413
    assert "1048576 bytes" in r.json()["detail"]


def test_streamed_body_over_limit_is_413(client: TestClient) -> None:
    """No Content-Length (chunked upload): the size is counted as the body arrives."""

    def chunks() -> Iterator[bytes]:
        yield b'{"name": "'
        for _ in range(20):
            yield b"x" * 65536
        yield b'"}'

    r = client.post("/v1/jobs", content=chunks(), headers={"Content-Type": "application/json"})
    assert r.status_code == 413, r.text
    assert "too large" in r.json()["detail"]


@pytest.mark.parametrize(
    ("body", "ctype", "words"),
    [
        (b'{"name": "x", "kernel": ', "application/json", ["malformed JSON", "line 1"]),
        (b"name: [unclosed", "application/yaml", ["malformed YAML"]),
        (b"[1, 2, 3]", "application/json", ["mapping", "list"]),
        (b"", "application/json", ["empty body"]),
        (b"\xff\xfe\x00", "application/json", ["UTF-8"]),
        (b'{"name": ' + b"1" * 5000 + b"}", "application/json", ["malformed JSON", "digits"]),
        (b"[" * 100_000 + b"]" * 100_000, "application/json", ["malformed JSON", "recursion"]),
        (b"name: " + b"1" * 5000, "application/yaml", ["malformed YAML", "digits"]),
        (b"a: " + b"[" * 50_000, "application/yaml", ["malformed YAML", "recursion"]),
    ],
    ids=["json", "yaml", "not-a-mapping", "empty", "not-utf8", "json-huge-int", "json-deep",
         "yaml-huge-int", "yaml-deep"],
)
def test_malformed_body_is_422_with_message(
    client: TestClient, body: bytes, ctype: str, words: list[str]
) -> None:
    r = client.post("/v1/jobs", content=body, headers={"Content-Type": ctype})
    assert r.status_code == 422, r.text
    err = r.json()["detail"][0]
    assert err["loc"] == ["body"]
    for w in words:
        assert w in err["msg"]


BILLION_LAUGHS = """
name: bomb
kernel: batch_decode
params:
  batch_size:
    - - &a [1, 1, 1, 1, 1, 1, 1, 1, 1]
      - &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]
      - &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]
      - &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]
      - &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]
      - &f [*e, *e, *e, *e, *e, *e, *e, *e, *e]
      - &g [*f, *f, *f, *f, *f, *f, *f, *f, *f]
      - &h [*g, *g, *g, *g, *g, *g, *g, *g, *g]
      - &i [*h, *h, *h, *h, *h, *h, *h, *h, *h]
"""


def test_yaml_alias_bomb_is_422_quickly(client: TestClient) -> None:
    r = client.post("/v1/jobs", content=BILLION_LAUGHS,
                    headers={"Content-Type": "application/yaml"})
    assert r.status_code == 422
    assert "expands to more than" in r.json()["detail"][0]["msg"]


def test_bad_query_values_name_allowed_values(client: TestClient) -> None:
    client.post("/v1/jobs", json=decode_spec())
    r = client.get("/v1/jobs/1/results?format=xml")
    assert r.status_code == 422
    err = r.json()["detail"][0]
    assert err["loc"] == ["query", "format"]
    assert "'xml'" in err["msg"] and "json" in err["msg"] and "csv" in err["msg"]
    r = client.get("/v1/jobs?status=done")
    assert r.status_code == 422
    msg = r.json()["detail"][0]["msg"]
    assert "status" in msg and "succeeded" in msg and "cancelled" in msg
    r = client.get("/v1/jobs?limit=0")
    assert r.status_code == 422 and "limit" in r.json()["detail"][0]["msg"]


@pytest.mark.parametrize("path", [
    "/v1/jobs/99999999999999999999999",
    "/v1/jobs/0",
    "/v1/compare?baseline=99999999999999999999&contender=1",
])
def test_out_of_range_ids_are_422_not_a_database_error(client: TestClient, path: str) -> None:
    r = client.get(path)
    assert r.status_code == 422, r.text
    assert "9223372036854775807" in r.text or "greater than or equal to 1" in r.text


def test_the_readme_first_sweep_is_valid() -> None:
    """``cpu_decode_sweep`` is the README's first sweep: the spec its first commands submit."""
    from pathlib import Path

    import yaml

    from kernelwatch.core.spec import SweepSpec, cpu_decode_sweep

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    block = readme.split("```yaml", 1)[1].split("```", 1)[0]
    assert SweepSpec(**yaml.safe_load(block)) == SweepSpec(**cpu_decode_sweep())


def test_a_float_parameter_is_validated_as_a_number() -> None:
    """Families may declare real-valued parameters (a sampling threshold): numbers in range
    are taken, 1 and 1.0 are one value, anything else is refused naming the range."""
    from kernelwatch.core import spec as spec_mod
    from kernelwatch_harness.family import Param

    p = Param("top_p", float, 0.9, min=0.0, max=1.0)
    assert p.describe_allowed() == "numbers from 0 to 1"
    import pytest as _pytest

    with _pytest.MonkeyPatch.context() as mp:
        mp.setitem(spec_mod.catalogue.PARAMS, "top_p", p)
        assert spec_mod._check_value("top_p", 1) == 1.0
        assert spec_mod._check_value("top_p", 0.5) == 0.5
        for bad, why in ((1.5, "out of range"), (True, "not a number"), ("0.5", "not a number")):
            with _pytest.raises(ValueError, match=f"params.top_p: .* {why}; allowed: numbers"):
                spec_mod._check_value("top_p", bad)
