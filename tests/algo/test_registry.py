"""The name -> function registry."""

import pytest

from zppo_ray.algo import Registry, UnknownNameError


def test_register_get_names_in_order():
    reg = Registry("widget")

    @reg.register("b")
    def b():
        return "b"

    @reg.register("a")
    def a():
        return "a"

    assert b() == "b"  # decorator returns the function unchanged
    assert reg.get("a") is a and reg.get("b") is b
    assert reg.names() == ["b", "a"]
    assert "a" in reg and "c" not in reg


def test_unknown_name_is_a_keyerror_listing_known_names():
    reg = Registry("widget")
    reg.register("x")(len)
    reg.register("y")(len)
    with pytest.raises(KeyError) as info:
        reg.get("z")
    assert isinstance(info.value, UnknownNameError)
    assert str(info.value) == "unknown widget 'z'; known: x, y"
    with pytest.raises(UnknownNameError, match=r"known: \(none\)"):
        Registry("empty").get("z")


def test_duplicate_registration_is_rejected():
    reg = Registry("widget")
    reg.register("x")(len)
    with pytest.raises(ValueError, match="already registered"):
        reg.register("x")(abs)
    assert reg.get("x") is len
