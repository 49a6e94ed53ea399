"""Moving a context's rows between databases, verified and recorded (``python -m kata
migrate-data``, kata/data.py, says every case).

tables.py (the contexts' tables, the shared error), checksums.py (what a table holds),
connections.py (the two databases), ledger.py (what was moved), copying.py (copy and
verify), moves.py (forward), rollback.py (``--reverse``) and backfill.py (a step that
builds read models from their providers' databases instead of moving rows).
"""

from kata.datamove.checksums import Summary, TableState, summarize
from kata.datamove.connections import describe_url
from kata.datamove.ledger import LEDGER, LEDGER_TABLE, LedgerEntry, ledger_entry
from kata.datamove.moves import Move, move_context
from kata.datamove.rollback import move_back
from kata.datamove.tables import BATCH_SIZE, DataMoveError, tables_of

__all__ = [
    "BATCH_SIZE",
    "LEDGER",
    "LEDGER_TABLE",
    "DataMoveError",
    "LedgerEntry",
    "Move",
    "Summary",
    "TableState",
    "describe_url",
    "ledger_entry",
    "move_back",
    "move_context",
    "summarize",
    "tables_of",
]
