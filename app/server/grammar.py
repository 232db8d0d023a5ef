"""A GBNF grammar for ``response_format: {"type": "json_object"}``: one JSON object, nothing else.

llama.cpp samples only tokens the grammar allows, so the reply parses as JSON once it is complete
(``max_tokens`` may still cut it short; ``finish_reason`` is then ``length``).  Whitespace between
tokens is bounded so that a small model cannot pad forever.
"""

JSON_OBJECT_GBNF = r"""
root    ::= object
value   ::= object | array | string | number | ("true" | "false" | "null") ws
object  ::= "{" ws ( string ":" ws value ( "," ws string ":" ws value )* )? "}" ws
array   ::= "[" ws ( value ( "," ws value )* )? "]" ws
string  ::= "\"" ( [^"\\\x7F\x00-\x1F] | "\\" ( ["\\/bfnrt] | "u" [0-9a-fA-F]{4} ) )* "\"" ws
number  ::= "-"? ( [0-9] | [1-9] [0-9]{0,15} ) ( "." [0-9]+ )? ( [eE] [-+]? [0-9]+ )? ws
ws      ::= [ \t\n]{0,8}
"""
