"""Renders chat templates with Python jinja2 the way transformers' apply_chat_template does, for
tests/chat/jinja2_test.ts: reads a JSON list of cases on stdin, prints a JSON list of results.

Environment as in transformers (chat_template_utils._compile_jinja_template): sandboxed,
trim_blocks, lstrip_blocks, loopcontrols, its own tojson filter and raise_exception/strftime_now.
Tool-call arguments sent as JSON strings are json.loads'ed into dicts first, as Python
OpenAI-compatible servers do before rendering.
"""
import json
import sys
from datetime import datetime

import jinja2
from jinja2.ext import loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment


def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def raise_exception(message):
    raise jinja2.exceptions.TemplateError(message)


def strftime_now(fmt):
    return datetime.now().strftime(fmt)


def environment():
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    return env


def normalize(message):
    calls = message.get("tool_calls")
    if isinstance(calls, list):
        fixed = []
        for call in calls:
            args = call.get("function", {}).get("arguments") if isinstance(call, dict) else None
            if isinstance(args, str):
                try:
                    parsed = json.loads(args)
                except ValueError:
                    parsed = None
                if isinstance(parsed, dict):
                    call = {**call, "function": {**call["function"], "arguments": parsed}}
            fixed.append(call)
        message = {**message, "tool_calls": fixed}
    return message


def render(env, case):
    variables = dict(case.get("variables") or {})
    variables["messages"] = [normalize(m) for m in case["messages"]]
    if case.get("tools"):
        variables["tools"] = case["tools"]
    variables["add_generation_prompt"] = case.get("add_generation_prompt", True)
    if case.get("enable_thinking") is not None:
        variables["enable_thinking"] = case["enable_thinking"]
    variables["bos_token"] = ""
    variables["eos_token"] = ""
    try:
        return {"text": env.from_string(case["template"]).render(**variables)}
    except Exception as e:  # the test compares failures too
        return {"error": f"{type(e).__name__}: {e}"}


def main():
    env = environment()
    cases = json.load(sys.stdin)
    json.dump([render(env, c) for c in cases], sys.stdout, ensure_ascii=False)


if __name__ == "__main__":
    main()
