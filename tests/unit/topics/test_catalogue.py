"""``topics/catalogue.partition_for``: where a keyed record lands, as Kafka's clients put it."""

from __future__ import annotations

import pytest

from appfirst.topics.catalogue import partition_for

# murmur2 of each key, from Apache Kafka's own tests (clients, UtilsTest.testMurmur2).
KAFKA_MURMUR2 = {
    b"21": -973932308,
    b"foobar": -790332482,
    b"a-little-bit-long-string": -985981536,
    b"a-little-bit-longer-string": -1486304829,
    b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
    b"abc": 479470107,
}


@pytest.mark.parametrize("partitions", [1, 4, 12, 100])
@pytest.mark.parametrize("key", sorted(KAFKA_MURMUR2))
def test_a_key_lands_where_kafkas_default_partitioner_puts_it(key: bytes, partitions: int) -> None:
    # Java's Utils.toPositive then modulo: the partition Faust's producer (aiokafka) and
    # Kafka's Java producer both choose for a record keyed ``key``.
    assert partition_for(key, partitions) == (KAFKA_MURMUR2[key] & 0x7FFFFFFF) % partitions
