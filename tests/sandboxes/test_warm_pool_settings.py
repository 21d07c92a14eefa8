"""WARM_POOL as an admin writes it: what it may ask for, and the message when it asks too much."""

import pytest
from django.core.exceptions import ImproperlyConfigured

from controlpanel.settings.sandboxes import WARM_POOL_MOST, _warm_pool


def test_a_pool_is_read_per_image_and_mode():
    assert _warm_pool("a/b:1@internet=2, a/b:1@allowlist=1 c@none=0") == (("a/b:1", "internet", 2), ("a/b:1", "allowlist", 1))


@pytest.mark.parametrize(
    "text",
    [
        "a@internet",
        "a@host=1",
        "@internet=1",
        "a@internet=-1",
        "a@internet=33",
        "a@none=1 a@none=2",
        "a@internet=\u00b3",
        "a@internet=\u0663",
    ],
)
def test_what_is_not_a_pool_is_refused(text):
    with pytest.raises(ImproperlyConfigured):
        _warm_pool(text)


def test_the_pools_together_ask_for_a_bounded_number_of_started_containers():
    """Each is at most 32, and all of them together at most WARM_POOL_MOST: every slot is a
    running container with an address on its bridge, counted nowhere else."""
    many = " ".join(f"image{i}@internet=32" for i in range(WARM_POOL_MOST // 32 + 1))
    with pytest.raises(ImproperlyConfigured, match="in all"):
        _warm_pool(many)
    assert sum(n for _, _, n in _warm_pool(f"a@internet=32 b@internet={WARM_POOL_MOST - 32}")) == WARM_POOL_MOST
