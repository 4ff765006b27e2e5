"""Quotas and the audit file without Ray: the token bucket against an independent formulation of the same limit
(GCRA, the "virtual scheduling" form ATM and many rate limiters use), a key's share per replica, the config's
checks, and the audit file appended to and rotated by several processes at once."""

import json
import multiprocessing
import random
from fractions import Fraction
from pathlib import Path

import pytest

from rayprism.deployments.audit import AuditFile
from rayprism.deployments.quotas import key_quotas
from rayprism.deployments.token_bucket import TokenBucket, retry_after_s
from rayprism.platform.config import RateConfig, ServeConfig
from rayprism.platform.config.base import parse_config
from rayprism.platform.errors import ConfigError, PayloadTooLargeError, RateLimitedError


class Gcra:
    """The same limit as a theoretical arrival time: the moment the bucket would be full again. A take of ``n``
    at ``now`` fits when the backlog after it, ``max(tat, now) + n / rate - now``, stays within ``capacity / rate``."""

    def __init__(self, rate: Fraction, capacity: Fraction):
        self.rate, self.capacity, self.tat = rate, capacity, Fraction(0)

    def take(self, n: int, now: Fraction) -> Fraction | None:
        """None when taken, else the wait until it would fit."""
        after = max(self.tat, now) + n / self.rate
        if after - now <= self.capacity / self.rate:
            self.tat = after
            return None
        return after - now - self.capacity / self.rate


@pytest.mark.parametrize(("rate", "capacity"), [(1, 1), (2, 5), (10, 10), (0.5, 3), (100, 250)])
def test_the_bucket_admits_and_waits_exactly_as_the_theoretical_arrival_time_says(rate, capacity):
    generator = random.Random(f"{rate}-{capacity}")
    bucket = TokenBucket(rate, capacity, now=0.0)
    reference = Gcra(Fraction(rate), Fraction(capacity))
    now = Fraction(0)
    admitted = 0
    for _ in range(2000):
        now += Fraction(generator.randint(0, 400), 1000) / Fraction(rate)  # some in the same instant
        n = generator.randint(1, max(1, int(capacity)))
        expected = reference.take(n, now)
        waited = bucket.take(n, float(now))
        if expected is None:
            assert waited == 0, (now, n)
            admitted += n
        else:
            assert waited == pytest.approx(float(expected), abs=1e-6), (now, n)
    assert 0 < admitted <= capacity + rate * float(now) + 1e-6  # never more than the burst plus what refilled


def test_more_than_the_burst_never_fits_and_retry_after_is_whole_seconds_at_least_one():
    bucket = TokenBucket(2, 4, now=0.0)
    assert bucket.take(5, 100.0) == float("inf")
    assert bucket.take(4, 100.0) == 0
    assert bucket.take(1, 100.0) == pytest.approx(0.5)
    assert [retry_after_s(wait) for wait in (0.001, 0.5, 1.0, 1.2, 7.0)] == [1, 1, 1, 2, 7]


def test_each_replica_holds_its_share_and_every_refusal_is_counted_by_the_keys_name():
    refused = []
    quotas = key_quotas({"team-a": RateConfig(requests_per_s=6, inputs_per_s=30, burst_s=2)}, replicas=3,
                        throttled=lambda key, limit: refused.append((key, limit)))
    quota = quotas["team-a"]
    assert (quota.requests.rate_per_s, quota.requests.capacity) == (2, 4)  # 6/s for 2 s, a third each
    assert (quota.inputs.rate_per_s, quota.inputs.capacity) == (10, 20)
    for _ in range(4):
        quota.charge("requests", 1)
    with pytest.raises(RateLimitedError) as throttled:
        quota.charge("requests", 1)
    assert throttled.value.http_status == 429 and throttled.value.retry_after_s == 1
    assert "this key (team-a) is over its requests per second quota" in throttled.value.message
    with pytest.raises(PayloadTooLargeError, match="at most 20 inputs at once"):
        quota.charge("inputs", 21)
    assert refused == [("team-a", "requests"), ("team-a", "inputs")]


@pytest.mark.parametrize(("server", "replicas", "says"), [
    ({"rate": {}}, 1, "rate needs requests_per_s, inputs_per_s or both"),
    ({"rate": {"requests_per_s": 0}}, 1, "greater than 0"),
    ({"rate": {"requests_per_s": 1, "burst_s": 1}}, 2,
     "rate.requests_per_s (1.0) × burst_s (1.0) / deployment.replicas.max (2) is under 1"),
])
def test_a_rate_that_no_replica_could_admit_is_refused_when_the_config_loads(server, replicas, says):
    entry = {"name": "x", "key": "sk-x-0123456789abcdef", "scopes": ["embed"], **server}
    with pytest.raises(ConfigError) as refused:
        parse_config(ServeConfig, {"server": {"api_keys": [entry]},
                                   "deployment": {"replicas": {"min": replicas, "max": replicas}}}, "serve.yaml")
    assert says in str(refused.value)


def _append(path: str, writer: int, lines: int) -> None:
    audit = AuditFile(path, max_bytes=4096, backups=1000)
    for number in range(lines):
        audit.write(json.dumps({"writer": writer, "number": number, "padding": "x" * (number % 50)}))
    audit.close()


def test_processes_appending_to_one_audit_file_never_interleave_lines_and_rotation_loses_none(tmp_path):
    path = tmp_path / "audit.jsonl"
    context = multiprocessing.get_context("fork")  # real processes, started cheaply
    writers = [context.Process(target=_append, args=(str(path), writer, 300)) for writer in range(4)]
    for process in writers:
        process.start()
    for process in writers:
        process.join(120)
        assert process.exitcode == 0
    files = [path, *sorted(tmp_path.glob("audit.jsonl.*[0-9]"), key=lambda p: int(p.suffix[1:]))]
    assert len(files) > 10 and all(file.stat().st_size <= 4096 for file in files)
    records = [json.loads(line) for file in reversed(files) for line in file.read_text().splitlines()]
    assert sorted((r["writer"], r["number"]) for r in records) == [(w, n) for w in range(4) for n in range(300)]
    for writer in range(4):  # oldest file first: each writer's lines in the order it wrote them
        assert [r["number"] for r in records if r["writer"] == writer] == list(range(300))


def test_rotation_keeps_only_the_backups_asked_for(tmp_path):
    audit = AuditFile(tmp_path / "audit.jsonl", max_bytes=100, backups=2)
    for number in range(20):
        audit.write(json.dumps({"number": number, "padding": "y" * 40}))
    audit.close()
    kept = sorted(Path(tmp_path).glob("audit.jsonl*"))
    assert [p.name for p in kept] == ["audit.jsonl", "audit.jsonl.1", "audit.jsonl.2", "audit.jsonl.lock"]
    numbers = [json.loads(line)["number"] for name in ("audit.jsonl.2", "audit.jsonl.1", "audit.jsonl")
               for line in (tmp_path / name).read_text().splitlines()]
    assert numbers == list(range(20 - len(numbers), 20))
