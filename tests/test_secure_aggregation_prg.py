"""The keyed stream behind every share, mask and dealer tuple: ChaCha20 (RFC 8439), checked against an
independent pure-Python implementation of the RFC's block function and its published test vector."""

from __future__ import annotations

import struct

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import chisquare, kstest, ks_2samp

from trustfl.defenses.secure_aggregation import decode, share_update
from trustfl.defenses.secure_aggregation.encoding import encode
from trustfl.defenses.secure_aggregation.mpc import TupleDealer, dealer_shares, tuple_part
from trustfl.defenses.secure_aggregation.prg import KEY_BYTES, new_key, nonce, normal_stream, ring_stream

M32 = 0xFFFFFFFF


# ---------------------------------------------------------------------------------------------- reference
def _rotl(v: int, c: int) -> int:
    return ((v << c) & M32) | (v >> (32 - c))


def _quarter_round(s: list[int], a: int, b: int, c: int, d: int) -> None:
    """RFC 8439 §2.1, written out from the RFC (not from any library)."""
    s[a] = (s[a] + s[b]) & M32
    s[d] = _rotl(s[d] ^ s[a], 16)
    s[c] = (s[c] + s[d]) & M32
    s[b] = _rotl(s[b] ^ s[c], 12)
    s[a] = (s[a] + s[b]) & M32
    s[d] = _rotl(s[d] ^ s[a], 8)
    s[c] = (s[c] + s[d]) & M32
    s[b] = _rotl(s[b] ^ s[c], 7)


def _chacha20_block(key: bytes, counter: int, iv: bytes) -> bytes:
    """RFC 8439 §2.3: the 64-byte keystream block for (key, block counter, 96-bit nonce)."""
    state = [0x61707865, 0x3320646E, 0x79622D32, 0x6B206574, *struct.unpack("<8L", key), counter,
             *struct.unpack("<3L", iv)]
    w = list(state)
    for _ in range(10):
        _quarter_round(w, 0, 4, 8, 12)
        _quarter_round(w, 1, 5, 9, 13)
        _quarter_round(w, 2, 6, 10, 14)
        _quarter_round(w, 3, 7, 11, 15)
        _quarter_round(w, 0, 5, 10, 15)
        _quarter_round(w, 1, 6, 11, 12)
        _quarter_round(w, 2, 7, 8, 13)
        _quarter_round(w, 3, 4, 9, 14)
    return struct.pack("<16L", *[(x + y) & M32 for x, y in zip(w, state)])


def _reference_words(key: bytes, iv: bytes, size: int) -> list[int]:
    raw = b"".join(_chacha20_block(key, i, iv) for i in range(-(-size * 8 // 64)))
    return list(struct.unpack(f"<{size}q", raw[:8 * size]))


def test_reference_block_function_matches_the_rfc_8439_test_vector():
    """RFC 8439 §2.3.2: key 00..1f, nonce 00:00:00:09:00:00:00:4a:00:00:00:00, block counter 1."""
    block = _chacha20_block(bytes(range(32)), 1, bytes.fromhex("000000090000004a00000000"))
    assert block.hex() == ("10f1e7e4d13b5915500fdd1fa32071c4c7d1f4c733c068030422aa9ac3d46c4e"
                           "d2826446079faa0914c2d705d98b02a2b5129cd1de164eb9cbd083e8a2503c4e")


# ---------------------------------------------------------------------------------------------- the stream
def test_ring_stream_equals_the_reference_keystream_read_as_little_endian_int64():
    for key, iv, size in [(bytes(range(32)), bytes(12), 9), (new_key(), nonce(7, 3), 41), (new_key(), nonce(), 1)]:
        assert ring_stream(key, size, iv).tolist() == _reference_words(key, iv, size)
    key = new_key()  # the default nonce is (0, 0); a stream longer than one 1 MiB internal chunk stays one stream
    long = ring_stream(key, (1 << 17) + 5)
    assert long[:16].tolist() == _reference_words(key, nonce(0, 0), 16)
    assert long[(1 << 17) - 3:].tolist() == _reference_words(key, nonce(0, 0), (1 << 17) + 5)[(1 << 17) - 3:]


@settings(max_examples=20, deadline=None)
@given(key=st.binary(min_size=32, max_size=32), counter=st.integers(0, 2 ** 64 - 1),
       purpose=st.integers(0, 2 ** 32 - 1), size=st.integers(0, 40))
def test_ring_stream_property_against_the_reference(key, counter, purpose, size):
    iv = nonce(counter, purpose)
    out = ring_stream(key, size, iv)
    assert out.dtype == torch.int64 and out.shape == (size,)
    assert out.tolist() == _reference_words(key, iv, size)
    assert torch.equal(out, ring_stream(key, size, iv))  # deterministic per (key, nonce)


def test_two_keys_and_two_nonces_give_independent_uniform_streams():
    k1, k2, n = new_key(), new_key(), 200_000
    s1, s2, s3 = ring_stream(k1, n), ring_stream(k2, n), ring_stream(k1, n, nonce(1, 0))
    for other in (s2, s3):
        assert not torch.equal(s1, other)
        u1, u2 = s1.double() / 2.0 ** 64 + 0.5, other.double() / 2.0 ** 64 + 0.5
        assert abs(float(np.corrcoef(u1.numpy(), u2.numpy())[0, 1])) < 0.01  # 1/sqrt(n) = 0.0022
        assert ks_2samp(u1.numpy(), u2.numpy()).pvalue > 1e-4
        assert kstest(((s1 - other).double() / 2.0 ** 64 + 0.5).numpy(), "uniform").pvalue > 1e-4  # differences too


def test_ring_stream_is_uniform_over_z_2_64():
    """Each of the 8 byte positions is uniform over 0..255 (no modulo bias, the top byte and sign included)."""
    words = ring_stream(new_key(), 200_000).numpy().view(np.uint8).reshape(-1, 8)
    for pos in range(8):
        counts = np.bincount(words[:, pos], minlength=256)
        assert chisquare(counts).pvalue > 1e-4, pos
    signs = ring_stream(new_key(), 100_000) < 0
    assert abs(float(signs.double().mean()) - 0.5) < 0.01


def test_normal_stream_is_standard_normal_and_deterministic_per_key():
    key = new_key()
    z = normal_stream(key, 100_000)
    assert z.dtype == torch.float64 and bool(torch.isfinite(z).all())
    assert kstest(z.numpy(), "norm").pvalue > 1e-4
    assert torch.equal(z, normal_stream(key, 100_000)) and not torch.equal(z, normal_stream(new_key(), 100_000))
    assert abs(float(np.corrcoef(z[:50_000].numpy(), z[50_000:].numpy())[0, 1])) < 0.02  # cos and sin halves
    assert normal_stream(key, 7).shape == (7,) and normal_stream(key, 1).shape == (1,)
    assert normal_stream(key, 0).shape == (0,)


def test_stream_inputs_are_checked():
    with pytest.raises(ValueError, match="32 bytes"):
        ring_stream(b"short", 4)
    with pytest.raises(ValueError, match="32 bytes"):
        ring_stream(12345, 4)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="size"):
        ring_stream(new_key(), -1)
    with pytest.raises(ValueError, match="size"):
        ring_stream(new_key(), 2 ** 36)
    with pytest.raises(ValueError, match="nonce"):
        ring_stream(new_key(), 4, b"\0" * 8)
    with pytest.raises(ValueError, match="counter"):
        nonce(-1)
    with pytest.raises(ValueError, match="counter"):
        nonce(2 ** 64)
    assert ring_stream(new_key(), 0).shape == (0,)
    assert len(new_key()) == KEY_BYTES and new_key() != new_key()


# ---------------------------------------------------------------------------------------------- shares
@settings(max_examples=25, deadline=None)
@given(values=st.lists(st.floats(-1e3, 1e3, allow_nan=False), min_size=1, max_size=50), parties=st.integers(2, 5))
def test_shares_sum_exactly_to_the_encoding(values, parties):
    x = torch.tensor(values, dtype=torch.float64)
    s = share_update(x, num_parties=parties)
    assert len(s.keys) == parties - 1 and all(len(k) == KEY_BYTES for k in s.keys)
    assert torch.equal(sum(s.share(j) for j in range(parties)), encode(x))  # exact in the ring
    assert (decode(sum(s.share(j) for j in range(parties))) - x).abs().max() < 2.0 ** -16


def test_share_keys_are_fresh_and_ignore_the_run_seed():
    """Keys come from the OS (secrets), not from torch's seeded generator: the same seed gives new shares."""
    x = torch.linspace(-1, 1, 64)
    torch.manual_seed(0)
    a = share_update(x, num_parties=3)
    torch.manual_seed(0)
    b = share_update(x, num_parties=3)
    assert a.keys[0] != b.keys[0] and a.keys[1] != b.keys[1]
    assert not torch.equal(a.last, b.last)
    assert torch.equal(sum(a.share(j) for j in range(3)), sum(b.share(j) for j in range(3)))


# ---------------------------------------------------------------------------------------------- dealer tuples
@pytest.mark.parametrize("parties, m, d", [(2, 1, 1), (3, 4, 257), (4, 3, 1000)])
def test_dealer_tuple_shares_satisfy_c_equals_a_b_and_s_equals_rowsum_b_squared(parties, m, d):
    keys = [new_key() for _ in range(parties)]
    flat = TupleDealer(keys).matmul_norms(m, d, 1)  # party 0's c and s, from the dealer
    parts = [dealer_shares(k, 1, m, d, with_products=True) for k in keys]
    a = sum(p[0] for p in parts)
    b = sum(p[1] for p in parts)
    c = flat[:d] + sum(p[2].reshape(d) for p in parts[1:])
    s = flat[d:] + sum(p[3] for p in parts[1:])
    assert torch.equal(c, (a @ b).reshape(d)) and torch.equal(s, (b * b).sum(dim=1))  # exact mod 2^64
    # the parts are distinct streams of one key (nonce purposes), and tuples differ by counter
    assert not torch.equal(tuple_part(keys[0], 1, 0, (m,)), tuple_part(keys[0], 2, 0, (m,)))


def test_the_dealer_never_serves_a_counter_twice():
    dealer = TupleDealer([new_key(), new_key()])
    dealer.matmul_norms(2, 3, 1)
    dealer.matmul_norms(2, 3, 5)
    for reused in (5, 1, 0):
        with pytest.raises(RuntimeError, match="already served"):
            dealer.matmul_norms(2, 3, reused)


def test_the_rsqrt_quadratic_meets_its_stated_relative_error():
    """The clip factor's 1/sqrt on a bucket (1, 2^(1/8)]: checked on a dense grid with float64 numpy."""
    from trustfl.defenses.secure_aggregation.mpc import BUCKETS_PER_OCTAVE, RSQRT_POLY

    u = np.linspace(1.0, 2.0 ** (1 / BUCKETS_PER_OCTAVE), 200_001)
    c0, c1, c2 = RSQRT_POLY
    assert np.abs((c0 + c1 * u + c2 * u * u) * np.sqrt(u) - 1).max() < 6.4e-6


@settings(max_examples=60, deadline=None)
@given(values=st.lists(st.one_of(st.floats(allow_nan=True, allow_infinity=True),
                                 st.sampled_from([1.7976931348623157e308, -1.7976931348623157e308, 3.4028234663852886e38])),
                       min_size=0, max_size=20))
def test_the_fast_finiteness_check_agrees_with_isfinite(values):
    """Hostile input: NaN, +-Inf, float64-max sums that overflow, empty and one-element vectors."""
    from trustfl.defenses.secure_aggregation.encoding import all_finite

    x = torch.tensor(values, dtype=torch.float64)
    assert all_finite(x) == bool(torch.isfinite(x).all())
    assert all_finite(x.float()) == bool(torch.isfinite(x.float()).all())
