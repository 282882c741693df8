"""Modules one FlashInfer call builds in turn, built side by side first
(kernelwatch_harness.jit_modules): the builds overlap, a generator a release lacks is skipped,
a build's failure reaches the caller; and which calls of the sampling family need it
(FlashInfer 0.7's top-k-first fast path, by the release's own applicability test)."""

from __future__ import annotations

import sys
import threading
import types
from typing import Any

import pytest

from kernelwatch_harness import jit_modules
from kernelwatch_harness.families import sampling_ops


class FakeSpec:
    """A JitSpec whose build waits for the other one's to have started."""

    def __init__(self, name: str, together: threading.Barrier, fail: bool = False) -> None:
        self.name, self.together, self.fail = name, together, fail
        self.built_in: str | None = None

    def build_and_load(self) -> None:
        self.together.wait()  # passes only if both builds run at once
        self.built_in = threading.current_thread().name
        if self.fail:
            raise RuntimeError(f"ninja failed building {self.name}")


@pytest.fixture
def fake_jit(monkeypatch: pytest.MonkeyPatch) -> dict[str, FakeSpec]:
    together = threading.Barrier(2, timeout=30)
    made = {"topk": FakeSpec("topk", together), "sampling": FakeSpec("sampling", together)}
    for name, spec in made.items():
        module = types.ModuleType(f"fakejit.{name}")
        setattr(module, f"gen_{name}_module", lambda spec=spec: spec)
        monkeypatch.setitem(sys.modules, f"fakejit.{name}", module)
    return made


def test_the_modules_build_at_once_in_threads(fake_jit: dict[str, FakeSpec]) -> None:
    built = jit_modules.build_side_by_side([("fakejit.topk", "gen_topk_module"),
                                            ("fakejit.sampling", "gen_sampling_module")])
    assert built == ["topk", "sampling"]
    threads = {s.built_in for s in fake_jit.values()}
    assert len(threads) == 2 and all(t and t.startswith("jit") for t in threads)


def test_a_generator_the_release_lacks_is_skipped_and_one_alone_is_left_to_the_call(
        fake_jit: dict[str, FakeSpec]) -> None:
    lacking = [("fakejit.topk", "gen_topk_module"), ("fakejit.nothing", "gen_x_module"),
               ("fakejit.sampling", "gen_nothing_module")]
    assert [s.name for s in jit_modules.specs(lacking)] == ["topk"]
    # nothing to overlap: not built here, the call builds it as it always does
    assert jit_modules.build_side_by_side(lacking) == []
    assert fake_jit["topk"].built_in is None


def test_compiling_without_loading_calls_the_specs_build(
        fake_jit: dict[str, FakeSpec]) -> None:
    """On a machine without a GPU (the bench) a module can be compiled, not loaded."""
    for spec in fake_jit.values():
        spec.build = spec.build_and_load  # type: ignore[attr-defined]
        spec.build_and_load = None  # type: ignore[assignment]
    assert jit_modules.build_side_by_side([("fakejit.topk", "gen_topk_module"),
                                           ("fakejit.sampling", "gen_sampling_module")],
                                          step="build") == ["topk", "sampling"]
    assert all(s.built_in for s in fake_jit.values())


def test_a_failed_build_reaches_the_caller(fake_jit: dict[str, FakeSpec]) -> None:
    fake_jit["sampling"].fail = True
    with pytest.raises(RuntimeError, match="ninja failed building sampling"):
        jit_modules.build_side_by_side([
            ("fakejit.topk", "gen_topk_module"), ("fakejit.sampling", "gen_sampling_module")])


class Release:
    """A release's flashinfer.sampling with the fast path's applicability test."""

    def __init__(self, taken: bool) -> None:
        self.taken = taken
        self.asked: list[tuple[Any, ...]] = []

    def _top_k_first_fast_path_applicable(self, x: Any, top_k: Any, indices: Any,
                                          top_k_max: Any = None) -> bool:
        self.asked.append((x, top_k, indices))
        return self.taken


PARAMS = {"top_k": 50, "top_p": 0.9, "filter_apply_order": "top_k_first"}


def test_the_samplers_fast_path_needs_both_modules_where_the_release_takes_it() -> None:
    logits, probs = object(), object()
    release = Release(taken=True)
    assert sampling_ops.modules_in_turn("top_k_top_p_sampling_from_logits", PARAMS,
                                        {"logits": logits}, release) == \
        (("flashinfer.jit.topk", "gen_topk_module"),
         ("flashinfer.jit.sampling", "gen_sampling_module"))
    assert sampling_ops.modules_in_turn("top_k_top_p_sampling_from_probs", PARAMS,
                                        {"probs": probs}, release) == \
        sampling_ops.TOP_K_FIRST_MODULES
    # the release's own test, on the point's scores and top_k
    assert release.asked == [(logits, 50, None), (probs, 50, None)]


@pytest.mark.parametrize("kernel,params,release", [
    ("top_k_top_p_sampling_from_logits", PARAMS, Release(taken=False)),  # not for this point
    ("top_k_top_p_sampling_from_logits", {**PARAMS, "filter_apply_order": "joint"},
     Release(taken=True)),
    ("top_k_sampling_from_probs", PARAMS, Release(taken=True)),
    ("top_k_top_p_sampling_from_logits", PARAMS, object()),  # a release without the path
])
def test_no_modules_in_turn_elsewhere(kernel: str, params: dict[str, Any],
                                      release: Any) -> None:
    data = {"logits": object(), "probs": object()}
    assert sampling_ops.modules_in_turn(kernel, params, data, release) == ()
