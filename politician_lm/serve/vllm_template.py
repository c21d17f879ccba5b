"""A Jinja chat template with which vLLM renders each persona's prompt as ``politician-lm serve`` renders it.

vLLM applies one chat template per server, whatever LoRA adapter a request names; a request's own
``chat_template`` is read only under ``--trust-request-chat-template`` (it lets any client run its Jinja on the
server), while ``chat_template_kwargs`` reach the template without it. So one template holds every persona's
prompt rule and renders the persona a request names in ``chat_template_kwargs: {"persona": NAME}`` (the only
persona when there is one; with several, a request without it is refused).

The rule is this server's (``protocol.conversation``, then ``PromptStyle.render``): a client's system and developer
messages (those with text) are joined by a blank line and appended to the persona's system prompt after a blank
line; in the ``chat`` format every message loses a leading speaker label, the persona's system prompt comes first
when the client sent none, and the base tokenizer's chat template (pasted in) renders the result; in the ``plain``
format user turns get ``USER:`` and earlier answers ``POLITICIAN:`` (unless labelled already), and every message is
followed by the separator. A message's text parts are joined with nothing between them (give vLLM
``--chat-template-content-format openai``: its ``string`` format joins them with newlines first). BOS is written
where ``encode_prompt`` would add it (vLLM tokenizes a chat prompt without special tokens): decided here, once,
from the tokenizer.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from politician_lm.artifacts.roles import ANY_LABELS, POLITICIAN_LABEL, USER_LABEL
from politician_lm.data.templates import PromptStyle
from politician_lm.data.tokenize import adds_bos
from politician_lm.errors import UserError

KWARG = "persona"  # the chat_template_kwargs key that names the persona

_PICK = """\
{%- set plm_personas = @PERSONAS@ -%}
{%- if @KWARG@ is defined and @KWARG@ is not none -%}{%- set plm_name = @KWARG@ -%}
{%- elif plm_personas | length == 1 -%}{%- set plm_name = (plm_personas | list)[0] -%}
{%- else -%}{{- raise_exception('name the persona: chat_template_kwargs {"@KWARG@": NAME}, NAME one of ' ~ \
(plm_personas | list | join(', '))) -}}
{%- endif -%}
{%- if plm_name not in plm_personas -%}{{- raise_exception('unknown persona ' ~ plm_name ~ '; one of ' ~ \
(plm_personas | list | join(', '))) -}}{%- endif -%}
{%- set plm = plm_personas[plm_name] -%}
"""

# ``strip_role_label``: a leading speaker label (any case, whitespace around the colon) removed
_UNLABEL = """\
{%- macro plm_unlabel(text) -%}
{%- set ns = namespace(out=text) -%}{%- set head = text.lstrip() -%}
{%- for name in @LABELS@ -%}
{%- if ns.out == text and head[:name | length].upper() == name -%}{%- set rest = head[name | length:].lstrip() -%}
{%- if rest.startswith(':') -%}{%- set ns.out = rest[1:].lstrip() -%}{%- endif -%}
{%- endif -%}
{%- endfor -%}
{{- ns.out -}}
{%- endmacro -%}
"""

# ``protocol.conversation``: the client's system text apart, turns labelled in the plain format, last turn a user's
_CONVERSATION = """\
{%- set plm_ns = namespace(system=[], turns=[]) -%}
{%- for m in messages -%}
{%- if m['content'] is string -%}{%- set text = m['content'] -%}
{%- elif m['content'] | rejectattr('type', 'equalto', 'text') | list | length -%}\
{{- raise_exception('only text content parts are supported') -}}
{%- else -%}{%- set text = m['content'] | map(attribute='text') | join('') -%}
{%- endif -%}
{%- if m['role'] in ('system', 'developer') -%}
{%- if text.strip() -%}{%- set plm_ns.system = plm_ns.system + [text] -%}{%- endif -%}
{%- elif m['role'] in ('user', 'assistant') -%}
{%- if plm['format'] == 'plain' and plm_unlabel(text) == text -%}
{%- set text = (@USER@ + text) if m['role'] == 'user' else (@POLITICIAN@ + text.lstrip()) -%}
{%- endif -%}
{%- set plm_ns.turns = plm_ns.turns + [{'role': m['role'], 'content': text}] -%}
{%- else -%}{{- raise_exception('role ' ~ m['role'] ~ ' is not supported') -}}
{%- endif -%}
{%- endfor -%}
{%- if not plm_ns.turns or plm_ns.turns[-1]['role'] != 'user' -%}\
{{- raise_exception('messages must end with a user message') -}}{%- endif -%}
{%- set plm_msgs = plm_ns.turns -%}
{%- if plm_ns.system -%}{%- set plm_client = plm_ns.system | join('\\n\\n') -%}
{%- set plm_msgs = [{'role': 'system', 'content': (plm['system'] ~ '\\n\\n' ~ plm_client) if plm['system'] \
else plm_client}] + plm_msgs -%}
{%- endif -%}
"""

# ``PromptStyle.render``: plain joins the turns; chat strips labels, puts the persona's prompt first, and hands the
# messages to the base model's own template, pasted after this part
_RENDER = """\
{%- if plm['format'] == 'plain' -%}
@PLAIN_BOS@{%- for m in plm_msgs -%}{{- m['content'] ~ plm['separator'] -}}{%- endfor -%}
{%- else -%}
{%- set plm_ns = namespace(msgs=[]) -%}
{%- for m in plm_msgs -%}
{%- set plm_ns.msgs = plm_ns.msgs + [{'role': m['role'], 'content': plm_unlabel(m['content'])}] -%}
{%- endfor -%}
{%- if plm['system'] and plm_ns.msgs[0]['role'] != 'system' -%}
{%- set plm_ns.msgs = [{'role': 'system', 'content': plm['system']}] + plm_ns.msgs -%}
{%- endif -%}
{%- set messages = plm_ns.msgs -%}
@CHAT_BOS@{{- '' }}"""


def _literal(value: Any) -> str:
    """A Jinja literal: strings as JSON strings (Jinja reads their escapes), ``None`` as ``none``, dicts of those."""
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{_literal(str(k))}: {_literal(v)}" for k, v in value.items()) + "}"
    return "none" if value is None else json.dumps(value, ensure_ascii=False)


def base_template(tokenizer: Any) -> str:
    """The tokenizer's default chat template (what ``apply_chat_template`` uses without a ``chat_template``)."""
    try:
        return tokenizer.get_chat_template()
    except ValueError:
        raise UserError(
            "a chat-format persona needs a base tokenizer with a chat template; this one has none"
        ) from None


def _bos(tokenizer: Any, template: str | None) -> tuple[bool, bool]:
    """``(plain, chat)``: whether the template must write BOS itself, as ``encode_prompt`` would add it."""
    if not adds_bos(tokenizer):
        return False, False
    if template is None:
        return True, False
    sample = tokenizer.apply_chat_template(
        [{"role": "user", "content": "x"}], chat_template=template, tokenize=False, add_generation_prompt=True
    )
    return True, not sample.startswith(tokenizer.bos_token)


def persona_template(styles: Mapping[str, PromptStyle], tokenizer: Any) -> str:
    """The one chat template for ``styles`` (persona name -> the prompt style it is served with), rendering each
    persona's prompt for the tokenizer the server uses (see the module docstring)."""
    chat = any(s.prompt_format == "chat" for s in styles.values())
    base = base_template(tokenizer) if chat else None
    plain_bos, chat_bos = _bos(tokenizer, base)
    table = {
        name: {"format": s.prompt_format, "system": s.system_prompt or "", "separator": s.separator}
        for name, s in styles.items()
    }
    labels = "[" + ", ".join(_literal(n) for n in ANY_LABELS) + "]"
    render = _RENDER.replace("@PLAIN_BOS@", "{{- bos_token -}}" if plain_bos else "")
    text = (
        _PICK.replace("@KWARG@", KWARG).replace("@PERSONAS@", _literal(table))  # the table last: it is users' text
        + _UNLABEL.replace("@LABELS@", labels)
        + _CONVERSATION.replace("@USER@", _literal(USER_LABEL)).replace("@POLITICIAN@", _literal(POLITICIAN_LABEL))
        + render.replace("@CHAT_BOS@", "{{- bos_token }}" if chat_bos else "")
    )
    # Jinja drops one newline at the end of a template; the pasted template is not at the end, so drop it here
    pasted = re.sub(r"(\r\n|\r|\n)\Z", "", base or "")
    return text + pasted + "{{ '' }}{% endif %}"
