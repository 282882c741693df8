"""The parameters several families take are declared once (``shared_params``): every name two
families take has its declaration there, and each family's parameter of that name is that
declaration with the family's own doc, so a change to one (a wider range, a new dtype) is made
in one place for every family instead of failing the catalogue's import check."""

from __future__ import annotations

import inspect

from kernelwatch_harness import catalogue, shared_params
from kernelwatch_harness.families import rope_fp8
from kernelwatch_harness.families.norm import FP8
from kernelwatch_harness.family import Param

DECLARATIONS = {name: fn for name, fn in inspect.getmembers(shared_params, inspect.isfunction)
                if fn.__module__ == shared_params.__name__}


def test_each_function_declares_the_parameter_it_is_named_after() -> None:
    for name, fn in DECLARATIONS.items():
        p = fn(doc="what it means here")
        assert isinstance(p, Param) and p.name == name and p.doc == "what it means here"


def test_every_name_two_families_take_is_the_shared_declaration_with_the_familys_doc() -> None:
    families_of: dict[str, list[str]] = {}
    for family in catalogue.FAMILIES.values():
        for name in family.params:
            families_of.setdefault(name, []).append(family.name)
    shared = {name for name, fams in families_of.items() if len(fams) > 1}
    assert shared == set(DECLARATIONS)  # and nothing here that one family alone takes
    for family in catalogue.FAMILIES.values():
        for name in shared & set(family.params):
            p = family.params[name]
            assert p == DECLARATIONS[name](doc=p.doc), (family.name, name)
            assert p.doc, (family.name, name)


def test_the_fp8_formats_are_the_ones_the_families_tables_know() -> None:
    choices = shared_params.quant_dtype(doc="").choices
    assert choices is not None
    assert set(choices) <= set(FP8) and set(choices) <= set(rope_fp8.QUANT_FLAG)
    assert set(choices) <= set(rope_fp8.MANTISSA_BITS)

