"""The client address: forwarded headers count only behind a configured proxy."""

from django.test import RequestFactory, override_settings

from accessgov.net import client_address

rf = RequestFactory()


def test_without_a_trusted_proxy_forwarded_headers_are_ignored():
    request = rf.get("/", REMOTE_ADDR="198.51.100.4", HTTP_X_FORWARDED_FOR="1.2.3.4")
    assert client_address(request) == "198.51.100.4"


@override_settings(TRUSTED_PROXY_COUNT=1)
def test_behind_one_proxy_the_address_the_proxy_saw_is_used():
    # The client sent its own forged header; the proxy appended the real address.
    request = rf.get("/", REMOTE_ADDR="10.0.0.2", HTTP_X_FORWARDED_FOR="1.2.3.4, 203.0.113.50")
    assert client_address(request) == "203.0.113.50"


@override_settings(TRUSTED_PROXY_COUNT=2)
def test_behind_two_proxies_the_outer_proxy_entry_is_used():
    request = rf.get("/", REMOTE_ADDR="10.0.0.3", HTTP_X_FORWARDED_FOR="6.6.6.6, 203.0.113.50, 10.0.0.2")
    assert client_address(request) == "203.0.113.50"


@override_settings(TRUSTED_PROXY_COUNT=1)
def test_garbage_in_the_forwarded_header_falls_back_to_the_peer():
    request = rf.get("/", REMOTE_ADDR="10.0.0.2", HTTP_X_FORWARDED_FOR="not-an-ip\r\nX-Evil: 1")
    assert client_address(request) == "10.0.0.2"
