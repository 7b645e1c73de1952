"""The term a batch id was written in: what a promoted DR site's replicas
must start above (`services.dr.lift_terms`)."""

from __future__ import annotations

from ironbook.replication.batch import batch_term, signed_batch_id


def test_the_term_of_signed_and_unsigned_batch_ids() -> None:
    assert batch_term(signed_batch_id(17, 3)) == 17
    assert batch_term("4:12") == 4


def test_what_is_not_a_batch_id_has_no_term() -> None:
    for text in ("", "s", "s:1", "sx:1", "hello", "12"):
        assert batch_term(text) is None, text
