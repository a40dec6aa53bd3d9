"""cddfm3d.serialization: state_dict_problems (the one report of why a strict state-dict load would fail) and
read_native_safetensors (the one reader of a package-native file's format and version), check_json_header (the
same for the package's JSON files)."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from cddfm3d.serialization import check_json_header, read_native_safetensors, save_safetensors, state_dict_problems


def _module() -> nn.Module:
    # 8 linear layers: 16 parameters, enough to see the five-name cut
    return nn.Sequential(*[nn.Linear(3, 3) for _ in range(8)])


def _strict_load_fails(module: nn.Module, sd: dict) -> bool:
    try:
        module.load_state_dict(sd, strict=True)
    except RuntimeError:
        return True
    return False


def test_matching_state_dict_has_no_problems():
    m = _module()
    sd = {k: v.clone() for k, v in m.state_dict().items()}
    assert state_dict_problems(m, sd) == []
    assert not _strict_load_fails(_module(), sd)


def test_each_kind_of_problem_is_named_with_its_count():
    m = _module()
    own = m.state_dict()
    sd = {k: v.clone() for k, v in own.items() if k not in ("0.bias", "3.weight")}
    sd["extra"] = torch.zeros(2)
    sd["5.weight"] = torch.zeros(4, 3)
    parts = state_dict_problems(m, sd)
    assert parts == ["2 missing tensor(s) ['0.bias', '3.weight']",
                     "1 unexpected tensor(s) ['extra']",
                     "1 shape mismatch(es) ['5.weight: expected (3, 3), found (4, 3)']"]
    assert _strict_load_fails(_module(), sd)  # the reference: torch refuses the same dict
    assert state_dict_problems(m, sd, noun="key")[0] == "2 missing key(s) ['0.bias', '3.weight']"


@pytest.mark.parametrize("n_missing", [1, 5, 6, 16])
def test_names_are_cut_at_five_in_module_order_but_the_count_is_whole(n_missing):
    m = _module()
    names = list(m.state_dict())
    sd = {k: v for k, v in m.state_dict().items() if k not in names[:n_missing]}
    (part,) = state_dict_problems(m, sd)
    assert part == f"{n_missing} missing tensor(s) {names[:min(n_missing, 5)]}"
    assert _strict_load_fails(_module(), sd)


def test_a_shape_with_the_same_element_count_is_still_a_mismatch():
    m = _module()
    sd = dict(m.state_dict(), **{"7.weight": torch.zeros(9)})
    assert state_dict_problems(m, sd) == ["1 shape mismatch(es) ['7.weight: expected (3, 3), found (9,)']"]
    assert _strict_load_fails(_module(), sd)


class _FileError(ValueError):
    pass


def test_read_native_returns_the_written_tensors_and_metadata(tmp_path):
    m = _module()
    p = save_safetensors(m, tmp_path / "m.safetensors", {"format": "tests.M", "version": "3", "config": "{}"})
    tensors, meta = read_native_safetensors(p, "tests.M", "tests.save", _FileError, version="3")
    assert meta == {"format": "tests.M", "version": "3", "config": "{}"}
    assert tensors.keys() == m.state_dict().keys()
    assert all(torch.equal(tensors[k], v) for k, v in m.state_dict().items())
    # without version, another version is the caller's business
    assert read_native_safetensors(p, "tests.M", "tests.save", _FileError)[1]["version"] == "3"


def test_read_native_errors_name_the_file_and_field(tmp_path):
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a safetensors file")
    with pytest.raises(_FileError, match=r"junk\.safetensors: cannot read safetensors file \(.*\); try X$"):
        read_native_safetensors(junk, "tests.M", "tests.save", _FileError, unreadable_hint="; try X")
    p = save_safetensors(_module(), tmp_path / "m.safetensors", {"format": "tests.Other", "version": "3"})
    with pytest.raises(_FileError, match=r"m\.safetensors: safetensors metadata field 'format' is 'tests\.Other', "
                                         r"expected 'tests\.M' \(a file written by tests\.save\)"):
        read_native_safetensors(p, "tests.M", "tests.save", _FileError)
    with pytest.raises(_FileError, match=r"m\.safetensors: safetensors metadata field 'version' is '3', expected '4'"):
        read_native_safetensors(p, "tests.Other", "tests.save", _FileError, version="4")
    bare = save_safetensors(_module(), tmp_path / "bare.safetensors", {})
    with pytest.raises(_FileError, match="field 'format' is None"):
        read_native_safetensors(bare, "tests.M", "tests.save", _FileError)


def test_json_header_accepts_the_format_and_version_and_names_what_differs():
    doc = {"format": "tests.J", "version": 2, "other": None}
    assert check_json_header(doc, "x.json", "tests.J", 2) is doc
    cases = [([], r"x\.json: expected a JSON object, found list"),
             ({"version": 2}, r"x\.json: field 'format' is None, expected 'tests\.J'"),
             ({"format": "tests.K", "version": 2}, r"x\.json: field 'format' is 'tests\.K', expected 'tests\.J'"),
             ({"format": "tests.J", "version": "2"}, r"x\.json: field 'version' is '2', expected 2"),
             ({"format": "tests.J"}, r"x\.json: field 'version' is None, expected 2")]
    for bad, pattern in cases:
        with pytest.raises(_FileError, match=pattern):
            check_json_header(bad, "x.json", "tests.J", 2, _FileError)
    with pytest.raises(ValueError, match="field 'version' is 3"):  # ValueError unless told otherwise
        check_json_header({"format": "tests.J", "version": 3}, "x.json", "tests.J", 2)
