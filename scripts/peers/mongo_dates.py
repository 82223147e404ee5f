"""Date range filters compared to the millisecond, as a real server compares them.

The emulator translates `{field: {$gt: <date>}}` to SQLite's `datetime(field) >
datetime(?)`, and `datetime()` keeps whole seconds: every document of the bound's second
matches `$gte`, none of them `$gt`, and a keyset query on (date, _id) cannot tell two
writes within one second apart. A BSON date holds milliseconds; this patch compares
`strftime('%Y-%m-%d %H:%M:%f', …)` (milliseconds) instead.
"""

import neosqlite.collection.sql_translator_unified as unified

_translate_operator = unified.SQLOperatorTranslator.translate_operator

MILLISECONDS = "strftime('%Y-%m-%d %H:%M:%f', "


def translate_operator(self, field_access, operator, value):
    sql, params = _translate_operator(self, field_access, operator, value)
    if sql is not None:
        sql = sql.replace("datetime(", MILLISECONDS)
    return sql, params


def install():
    unified.SQLOperatorTranslator.translate_operator = translate_operator
