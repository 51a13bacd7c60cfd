"""Reading and writing the id: cookies, URL rewriting, headers."""

from __future__ import annotations

import pytest

import sessionkeeper as sk
from sessionkeeper.tracking import Mode, Tracking, cookie_value, split_path_param


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("sessionid=abc", "abc"),
        ("a=1; sessionid=abc; b=2", "abc"),
        ('sessionid="abc"', "abc"),
        ("xsessionid=nope; sessionid=yes", "yes"),
        ("sessionid=; sessionid=second", "second"),
        ("garbage;;;=;sessionid=v", "v"),
        ("a=1", None),
        ("", None),
    ],
)
def test_cookie_value(header: str, expected: str | None) -> None:
    assert cookie_value(header, "sessionid") == expected


@pytest.mark.parametrize(
    ("path", "clean", "value"),
    [
        ("/cart;sessionid=abc.n1", "/cart", "abc.n1"),
        ("/a;sessionid=abc/b", "/a/b", "abc"),
        ("/a;x=1;sessionid=abc;y=2", "/a;x=1;y=2", "abc"),
        ("/plain", "/plain", None),
        ("/a;sessionid=", "/a", None),
    ],
)
def test_split_path_param(path: str, clean: str, value: str | None) -> None:
    assert split_path_param(path) == (clean, value)


def test_encode_url() -> None:
    assert sk.encode_url("/a/b?x=1#f", "tok.n1") == "/a/b;sessionid=tok.n1?x=1#f"
    assert sk.encode_url("/a;sessionid=old", "new.n") == "/a;sessionid=new.n"
    assert sk.encode_url("http://h/p", "t.n", "sid") == "http://h/p;sid=t.n"


def test_read_order_and_cookie_rendering() -> None:
    t = Tracking(modes=(Mode.HEADER, Mode.COOKIE))
    assert t.read(cookie_header="sessionid=c", path_param=None, header_value="h") == "h"
    assert t.read(cookie_header="sessionid=c", path_param=None, header_value=None) == "c"
    c = Tracking(cookie_samesite="None", cookie_max_age_s=60, cookie_domain="x.org")
    v = c.set_cookie("id", https=False)
    assert "Secure" in v and "SameSite=None" in v and "Max-Age=60" in v and "Domain=x.org" in v
    assert "Max-Age=0" in c.delete_cookie(https=True)
    with pytest.raises(sk.ConfigurationError):
        Tracking(cookie_name="bad name")
