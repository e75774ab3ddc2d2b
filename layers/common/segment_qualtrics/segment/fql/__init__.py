"""Subscription triggers: Segment's Destination Filter Query Language (FQL).

A subscription's ``trigger`` (Segment calls it ``subscribe``) decides which events reach an action.
``compile_trigger`` parses it once (tokenizer + recursive descent) into a tree of small nodes. Each node
carries a closure, so ``Trigger.matches`` evaluates an event without re-parsing; ``Trigger.explain`` walks
the same tree to say in words why an event matched or not (dry-run preview). Standard library only.

Modules: ``lexer`` (tokens, TriggerSyntaxError), ``parser`` (recursive descent into nodes),
``evaluate`` (the nodes, their closures and explanations), ``values`` (FQL types over JSON data),
``functions`` (contains, match, ...), ``glob`` (match()'s patterns), ``index`` (what a trigger needs of
the event's type and name, for the ingest's router), ``trigger`` (Trigger, compile_trigger).

Grammar, lowest precedence first::

    trigger    = or_expr END
    or_expr    = and_expr { "or" and_expr }
    and_expr   = not_expr { ( "and" | "," ) not_expr }
    not_expr   = "!" not_expr | comparison
    comparison = operand [ ( "=" | "!=" | "<" | "<=" | ">" | ">=" | "in" ) operand ]
    operand    = STRING | NUMBER | "true" | "false" | "null" | list | "(" or_expr ")"
               | FUNCTION "(" or_expr { "," or_expr } ")" | path
    list       = "[" [ literal { "," literal } ] "]"
    path       = name { "." name | "[" DIGITS "]" }

Sources: Segment's FQL reference (segment-docs ``src/api/public-api/fql.md``), the ``segmentio/fql-ts``
lexer, and ``@segment/destination-subscriptions`` (``parse-fql.ts``, ``validate.ts``), which evaluates the
subscriptions of action destinations such as Qualtrics. Where they are silent or disagree, we chose:

- Comma. Segment's Qualtrics code writes a default trigger as ``type = "track", event = "Transaction
  Created"``. The FQL docs never mention a comma, but Segment's subscription parser skips the comma token
  and keeps its default group operator, ``and``. So a comma between conditions means ``and`` (same
  precedence). Inside function calls and lists it still separates arguments and items.
- Precedence (the docs do not state it): ``or`` < ``and``/``,`` < ``!`` < comparison. ``!`` negates a
  whole comparison, like SQL's NOT: ``!type = "track"`` means ``!(type = "track")``. A C-style reading
  (``(!type) = "track"``) could never be true, so it would only ever hide a mistake.
- Strings take double or single quotes (the docs use single, Segment's code double). Escapes: ``\\"``
  ``\\'`` ``\\\\`` ``\\n`` ``\\r`` ``\\t`` ``\\uXXXX``. Any other backslash pair is kept as written, so
  glob escapes such as ``match(event, "a\\*")`` reach the glob matcher.
- Types follow the docs strictly. ``=`` is true when both sides have the same type and are equal
  (``1 = 1.0``; lists and objects compare deeply); ``!=`` is its exact negation. ``<`` ``<=`` ``>``
  ``>=`` compare numbers only (booleans are not numbers); any other pair is false, never an error. A
  numeric string is not a number: ``properties.total > 10`` is false for ``"19.99"`` (Segment's
  ``validate.ts`` coerces with ``String()``/``Number()``; FQL's docs do not). ``number(...)`` converts.
- A missing path reads as ``null``: ``x = null`` is true when x is missing or null, ``x != null`` when it
  exists and is not null.
- A value standing alone as a condition (``properties.enabled or ...``, a docs example) is true only when
  it is the boolean ``true``. ``and``/``or``/``!`` treat everything else as false.
- Paths: names use ``a-z A-Z 0-9 _ -``; any other character is escaped with a backslash, as the docs say
  (``properties.product\\ 1.price``, ``properties.a\\.b``). ``and or in null true false`` are keywords at
  the start of a path (write ``\\null`` for a top-level key of that name); after a dot every name is a key.
  ``.0`` and ``[0]`` index lists (lodash style, as Segment's ``get.ts``); on an object they read key "0".
  Paths address the event as written. (Segment's runtime reads ``properties.*`` from ``traits`` on identify
  and group events; we do not copy that quirk.)
- Keywords are lowercase. ``in`` is true when a string/number/bool/null left side equals an item of the
  list on the right.
- Functions, with the docs' null handling (``contains(null, s)`` false, ``length(null)`` 0,
  ``lowercase(null)`` null, ``typeof(null)`` "null", ``match(null, p)`` false): contains, match, length,
  lowercase, uppercase, snakecase, kebabcase, titlecase, typeof, bool, string, number. ``length`` of a
  string counts UTF-8 bytes, as documented. ``typeof`` returns the docs' names "string", "number",
  "bool", "null", "list", plus "object" for maps (the docs name none) and "unknown" for non-JSON values.
  ``match(s, pattern)`` is a full, case-sensitive glob: ``*`` ``?`` ``[abc]`` ``[a-z]`` ``[^abc]``
  ``\\x``. A malformed literal pattern is a syntax error; a malformed pattern read from the event, or one
  longer than 256 characters, makes ``match`` false. Matching never backtracks: its time is at most the
  text's length times the pattern's, whatever the number of stars. (One docs example swaps the
  arguments; we follow the documented signature.)
- Error positions are 0-based indexes into the source; "end of input" is at ``len(source)``.
  Nesting (parentheses, ``!``, calls) is limited to 64 levels so no input can exhaust the stack.
"""

from segment_qualtrics.segment.fql.glob import MAX_EVENT_GLOB
from segment_qualtrics.segment.fql.lexer import TriggerSyntaxError
from segment_qualtrics.segment.fql.parser import MAX_NESTING
from segment_qualtrics.segment.fql.trigger import Trigger, compile_trigger

__all__ = ["MAX_EVENT_GLOB", "MAX_NESTING", "Trigger", "TriggerSyntaxError", "compile_trigger"]
