"""Grading one submitted notebook, in the run process: outside the student's kernel, which runs
in the run's sandbox and can neither see nor signal this process.

The site sends the graded notebook (rebuilt from the instructor's source: test, hidden-test and
locked cells are the instructor's; only answer cells are the student's) inside the job, never as a
file in the run's folder, so the student's code cannot read hidden tests from disk.

Two executions, each on a kernel of its own:

1. the feedback execution, only when the notebook has hidden tests: the notebook without them,
   run as the student would run it. Its outputs are the only text of the run a student may see
   (the graded execution's may hold hidden tests: student code can read the kernel's history).
   It runs first, so no process it leaves behind ever knew a hidden test.
2. the graded execution, of the whole notebook. Before any student code runs, the grader keeps a
   copy of the kernel's hooks (input and AST transformers, the compiler, traceback and exception
   handlers, the display trap, event callbacks, the kernel's message handlers, methods of the
   shell and kernel and their classes, the builtins, trace functions, signal handlers and
   interval timers) and refuses audit hooks from then on (one could rewrite what tests compile
   and can never be removed). Before each test cell it restores them, through a user expression
   of an empty request (evaluated by the kernel after the cell, so no input transformer or
   replaced run_cell stands in its way), and names what it undid; right after the test it
   restores them again and names what changed while the test ran. After each of the
   instructor's own cells it keeps the hooks again (a setup cell may install some: sympy's
   init_session). Each test cell carries a one-time proof of execution that shows only when
   control reaches its last expression. For each test cell the grader reports (a GRADE event)
   what it received here: the kernel's execute reply, the proof, errors and stderr among its
   outputs, its result (nbgrader's partial credit), what it undid. A timeout, a dead or wedged
   kernel, or no reply is reported as such; the site scores those 0. Nothing the student's code
   prints, writes or exits with is read.

What this does not stop (the limits of grading in the interpreter that ran the student's code;
nbgrader and otter share them): code aimed at this grader in particular (finding the kept copy
among the kernel's objects, replacing user_expressions or the notebook's __builtins__ so the
restore never runs but seems to); a thread that changes hooks while a test runs (named for the
instructor as "review", not scored 0: honest libraries start threads and register callbacks);
and answers that fool the tests themselves (an object equal to everything, a patched
numpy.testing). The site flags answer cells that use the APIs these need (apps.courses.rebuild).
The generic attacks (an input or AST transformer that drops test code, a replaced showtraceback,
run_cell or compiler, custom exception handlers, a trace function, an audit hook, sys.exit,
killing the kernel, printed claims, result files) are each undone or scored 0, and tested
(tests/agent/test_grading.py, tests/integration/test_grading.py).
"""

from __future__ import annotations

import ast
import contextlib
import copy
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from . import execute

PROOF_MIME = "application/vnd.reprolab.proof+json"
HIDDEN_TESTS = ("BEGIN HIDDEN TESTS", "END HIDDEN TESTS")
MESSAGE_LIMIT = 2000  # characters of an error message reported
RESULT_LIMIT = 200  # characters of a test cell's result (partial credit) reported
INTERRUPT_GRACE = 5.0  # seconds a kernel gets to answer once a timed-out cell was interrupted
GRADED = "graded"  # the run process's last word on a grading job: the two executed notebooks

# Reply outcomes, as reported per test cell.
REPLY_OK = "ok"
REPLY_ERROR = "error"
REPLY_TIMEOUT = "timeout"
REPLY_NONE = "none"  # never executed, or no reply: the kernel died, stayed busy, or the run stopped


# --- nbgrader's cell metadata (as much as grading needs) -------------------------------------------
def nbgrader_metadata(cell: dict[str, Any]) -> dict[str, Any]:
    metadata = cell.get("metadata")
    found = metadata.get("nbgrader") if isinstance(metadata, dict) else None
    return found if isinstance(found, dict) else {}


def is_test(cell: dict[str, Any]) -> bool:
    """An autograder test: a code cell with grade and without solution."""
    meta = nbgrader_metadata(cell)
    return cell.get("cell_type") == "code" and bool(meta.get("grade")) and not meta.get("solution")


def source_of(cell: dict[str, Any]) -> str:
    source = cell.get("source", "")
    return "".join(source) if isinstance(source, list) else str(source)


def replace_regions(source: str, markers: tuple[str, str], stub: str | None) -> tuple[str, bool]:
    """The source with each marked region (its begin and end lines included) replaced by `stub`,
    indented like its begin line, or removed when `stub` is None; and whether there was one.
    nbgrader's rule, shared with the site's generation of student versions."""
    lines: list[str] = []
    inside = replaced = False
    for line in source.split("\n"):
        if markers[0] in line:
            inside = replaced = True
            if stub is not None:
                indent = re.match(r"\s*", line)
                lines += [(indent.group(0) if indent else "") + stub_line for stub_line in stub.split("\n")]
        elif markers[1] in line:
            inside = False
        elif not inside:
            lines.append(line)
    return "\n".join(lines), replaced


def has_hidden_tests(nb: dict[str, Any]) -> bool:
    return any(is_test(cell) and HIDDEN_TESTS[0] in source_of(cell) for cell in nb.get("cells", []))


def without_hidden_tests(nb: dict[str, Any]) -> dict[str, Any]:
    """The notebook as the student sees it: hidden tests removed, outputs cleared."""
    nb = copy.deepcopy(nb)
    for cell in nb.get("cells", []):
        if is_test(cell):
            cell["source"] = replace_regions(source_of(cell), HIDDEN_TESTS, None)[0]
        if cell.get("cell_type") == "code":
            cell["outputs"] = []
            cell["execution_count"] = None
    return nb


# --- the kernel side: kept hooks and their restoration ------------------------------------------------
# Run silently before any student code: keeps the kernel's hooks under a name chosen per run.
KEEP_HOOKS = r"""
def _reprolab_keep(key):
    import builtins, signal, sys, threading, types
    import IPython.core.compilerop as compilerop
    import IPython.core.interactiveshell as interactiveshell
    from IPython import get_ipython
    ip = get_ipython()
    kernel = getattr(ip, "kernel", None)
    kinds = (types.FunctionType, classmethod, staticmethod, property)
    modules = (builtins, compilerop, interactiveshell)
    # Builtins IPython and ipykernel swap in for each request themselves (get_ipython, exit, input).
    swapped = set(ip.builtin_trap.auto_builtins) | {"input", "raw_input", "display"}
    signals = [s for s in (signal.SIGALRM, signal.SIGVTALRM, signal.SIGPROF, signal.SIGUSR1, signal.SIGUSR2)]
    state = {}

    def capture():
        manager = ip.input_transformer_manager
        watched = [o for o in (ip, kernel, ip.displayhook, ip.display_pub, ip.display_trap, ip.events, manager, ip.compile) if o is not None]
        methods = {id(o): {n for c in type(o).__mro__ for n, v in vars(c).items() if isinstance(v, kinds)} for o in watched}
        state.update(
            manager=manager,
            watched=watched,
            classes={cls: {n: v for n, v in vars(cls).items() if isinstance(v, kinds)} for o in watched for cls in type(o).__mro__ if cls is not object},
            methods=methods,
            own={id(o): {n: vars(o)[n] for n in methods[id(o)] & set(vars(o))} for o in watched},
            modules={m: dict(vars(m)) for m in modules},
            lists=(list(manager.cleanup_transforms), list(manager.line_transforms), list(manager.token_transformers), list(ip.input_transformers_post), list(ip.ast_transformers)),
            callbacks={k: list(v) for k, v in ip.events.callbacks.items()},
            handlers=dict(kernel.shell_handlers) if kernel is not None else None,
            compile=ip.compile,
            trap_hook=ip.display_trap.hook,
            user_builtins=ip.user_ns.get("__builtins__"),
            signals={s: signal.getsignal(s) for s in signals},
            threads=threading.active_count(),
        )
        return True

    def reset(token):
        undone = []  # what student code changed, named for the instructor
        for cls, attributes in state["classes"].items():
            for name, value in list(vars(cls).items()):
                if isinstance(value, kinds) and name not in attributes:
                    delattr(cls, name)
                    undone.append(f"{cls.__name__}.{name}")
            for name, value in attributes.items():
                if vars(cls).get(name) is not value:
                    setattr(cls, name, value)
                    undone.append(f"{cls.__name__}.{name}")
        for o in state["watched"]:
            own = state["own"][id(o)]
            for name in state["methods"][id(o)] & (set(vars(o)) | set(own)):
                if name not in own:
                    del vars(o)[name]
                elif vars(o).get(name) is not own[name]:
                    vars(o)[name] = own[name]
                else:
                    continue
                undone.append(f"{type(o).__name__}.{name} (on the object)")
        for module, kept in state["modules"].items():
            for name in set(vars(module)) | set(kept):
                if (name.startswith("__") and name != "__import__") or (module is builtins and name in swapped):
                    continue
                if name not in kept:
                    delattr(module, name)
                elif vars(module).get(name) is not kept[name]:
                    setattr(module, name, kept[name])
                else:
                    continue
                undone.append(f"{module.__name__}.{name}")
        manager = state["manager"]
        if ip.input_transformer_manager is not manager:
            ip.input_transformer_manager = manager
            undone.append("input_transformer_manager")
        names = ("input transformers", "input transformers", "input transformers", "input_transformers_post", "ast_transformers")
        now = (manager.cleanup_transforms, manager.line_transforms, manager.token_transformers, ip.input_transformers_post, ip.ast_transformers)
        for what, current, then in zip(names, now, state["lists"]):
            if len(current) != len(then) or any(a is not b for a, b in zip(current, then)):
                current[:] = then
                undone.append(what)
        for what, now_value, then, put in (
            ("compiler", ip.compile, state["compile"], lambda v: setattr(ip, "compile", v)),
            ("display trap", ip.display_trap.hook, state["trap_hook"], lambda v: setattr(ip.display_trap, "hook", v)),
            ("__builtins__ of the notebook", ip.user_ns.get("__builtins__"), state["user_builtins"], lambda v: ip.user_ns.__setitem__("__builtins__", v)),
        ):
            if now_value is not then:
                put(then)
                undone.append(what)
        if ip.custom_exceptions:
            ip.custom_exceptions = ()
            undone.append("custom exception handler")
        if kernel is not None and kernel.shell_handlers != state["handlers"]:
            kernel.shell_handlers.clear()
            kernel.shell_handlers.update(state["handlers"])
            undone.append("kernel message handlers")
        if sys.gettrace() is not None or sys.getprofile() is not None:
            undone.append("trace function")
        sys.settrace(None)
        sys.setprofile(None)
        threading.settrace(None)
        threading.setprofile(None)
        if any(signal.getitimer(t) != (0.0, 0.0) for t in (signal.ITIMER_REAL, signal.ITIMER_VIRTUAL, signal.ITIMER_PROF)):
            for t in (signal.ITIMER_REAL, signal.ITIMER_VIRTUAL, signal.ITIMER_PROF):
                signal.setitimer(t, 0)
            undone.append("interval timers")
        for s, handler in state["signals"].items():
            if signal.getsignal(s) is not handler:
                signal.signal(s, handler)
                undone.append(f"handler of {signal.Signals(s).name}")
        # Changed by honest code too (matplotlib's inline backend registers a callback, tqdm
        # starts a thread): restored or counted, named apart so they never read as tampering.
        quiet = []
        for name in list(ip.events.callbacks):
            if ip.events.callbacks[name] != state["callbacks"].get(name, []):
                ip.events.callbacks[name][:] = state["callbacks"].get(name, [])
                quiet.append(f"{name} callbacks")
        if threading.active_count() > state["threads"]:
            quiet.append(f"{threading.active_count() - state['threads']} thread(s) left running")
        return [token, sorted(set(undone))[:50], quiet[:50]]

    def refuse_audit_hooks(event, args):
        # An audit hook could change what the tests compile and can never be removed: refused
        # while grading (raising here aborts sys.addaudithook; honest notebooks never call it).
        if event == "sys.addaudithook":
            raise RuntimeError("sys.addaudithook is not allowed in a graded notebook")

    sys.addaudithook(refuse_audit_hooks)
    capture()
    sys.modules[key] = types.SimpleNamespace(reset=reset, capture=capture)

_reprolab_keep(%r)
del _reprolab_keep
"""


def keep_hooks_code(key: str) -> str:
    return KEEP_HOOKS % key


def capture_expression(key: str) -> str:
    """Take the kernel's hooks as they are now as the ones to restore (after an instructor's
    cell, which may install its own: sympy's init_session, an AST transformer)."""
    return f"__import__('sys').modules[{key!r}].capture()"


def reset_expression(key: str, token: str) -> str:
    """Evaluated as a user expression of an empty request: after the (empty) cell, with eval
    itself, so no input transformer or replaced run_cell stands in its way; its value, starting
    with the token, shows it ran, and says what it undid."""
    return f"__import__('sys').modules[{key!r}].reset({token!r})"


@dataclass
class Reset:
    done: bool = False
    undone: list[str] = field(default_factory=list)  # changes that could have forged a result
    restored: list[str] = field(default_factory=list)  # changes honest code makes too


def read_reset(text: str, token: str) -> Reset:
    """The reset's value as the kernel displayed it (a list's repr), checked against its token."""
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return Reset()
    if not isinstance(value, list) or len(value) != 3 or value[0] != token:
        return Reset()
    undone, restored = ([plain(x, 100) for x in v] if isinstance(v, list) else [] for v in value[1:])
    return Reset(True, undone[:50], restored[:50])


def with_proof(source: str, nonce: str) -> str:
    """The test cell's source with a proof of execution that shows only once every statement
    before its last expression has run: placed before that expression (which stays last, for
    partial credit) or after the last statement. IPython syntax (magics) is translated first,
    as the kernel would."""
    proof = f"__import__('IPython').display.publish_display_data({{{PROOF_MIME!r}: {{'nonce': {nonce!r}}}}})"
    try:
        from IPython.core.inputtransformer2 import TransformerManager

        python = TransformerManager().transform_cell(source)
        tree = ast.parse(python)
    except Exception:  # not Python: the kernel reports the syntax error, and there is no proof
        return source
    if not tree.body:
        return proof
    last = tree.body[-1]
    lines = python.split("\n")
    if isinstance(last, ast.Expr):
        row = last.lineno - 1
        head = lines[row].encode()[: last.col_offset].decode(errors="ignore")  # col_offset counts UTF-8 bytes
        candidate = "\n".join([*lines[:row], f"{head}{proof}; {lines[row][len(head) :]}", *lines[row + 1 :]])
        with contextlib.suppress(SyntaxError):
            ast.parse(candidate)
            return candidate
    return python.rstrip("\n") + "\n" + proof


# --- observing ---------------------------------------------------------------------------------------
@dataclass
class Seen:
    """What arrived on IOPub for one cell, noted as it arrived (before any output cap drops it)."""

    error: tuple[str, str] | None = None
    stderr: bool = False
    result: str | None = None  # the last execute_result's text
    proofs: set[str] = field(default_factory=set)


def observing_client(base: Any) -> Any:
    """`base` (an nbclient client class) noting, per cell, errors, stderr, the result and proofs
    of execution; proofs are never kept in the notebook."""

    class ObservingClient(base):
        seen: dict[int, Seen]

        def output(self, outs: Any, msg: dict[str, Any], display_id: Any, cell_index: int) -> Any:
            seen = self.seen.setdefault(cell_index, Seen())
            kind, content = msg.get("msg_type"), msg.get("content") or {}
            data: dict[str, Any] = content["data"] if isinstance(content.get("data"), dict) else {}
            if kind == "display_data" and PROOF_MIME in data:
                nonce = data[PROOF_MIME].get("nonce") if isinstance(data[PROOF_MIME], dict) else None
                seen.proofs.add(str(nonce))
                return None
            if kind == "error" and seen.error is None:
                seen.error = (plain(content.get("ename"), 200), plain(content.get("evalue"), MESSAGE_LIMIT))
            elif kind == "stream" and content.get("name") == "stderr":
                seen.stderr = True
            elif kind == "execute_result":  # the cell's own result comes last; an earlier one is not it
                text = data.get("text/plain")
                seen.result = plain("".join(text) if isinstance(text, list) else text, RESULT_LIMIT)
            return super().output(outs, msg, display_id, cell_index)

    return ObservingClient


def plain(value: Any, limit: int) -> str:
    """Text a student's code produced, safe to send and store: at most `limit` characters, no NUL,
    valid Unicode (PostgreSQL's JSON refuses the other two)."""
    text = "" if value is None else str(value)
    return text[:limit].replace("\x00", "\ufffd").encode("utf-8", "replace").decode("utf-8")


def observe(
    cell: dict[str, Any], seen: Seen, reply: str, *, nonce: str, reset: Reset, seconds: float
) -> dict[str, Any]:
    """What the grader saw of one test cell (a GRADE payload; the site scores it)."""
    ename, evalue = seen.error or ("", "")
    return {
        "grade_id": str(nbgrader_metadata(cell).get("grade_id", "")),
        "reply": reply,
        "proof": bool(nonce) and nonce in seen.proofs,
        "reset": reset.done,
        "undone": reset.undone,
        "restored": reset.restored,
        "error": seen.error is not None,
        "ename": ename,
        "evalue": evalue,
        "stderr": seen.stderr,
        "result": seen.result,
        "seconds": round(seconds, 4),
    }


def unexecuted(cell: dict[str, Any], note: str) -> dict[str, Any]:
    return {**observe(cell, Seen(), REPLY_NONE, nonce="", reset=Reset(), seconds=0.0), "note": note}


# --- executing ----------------------------------------------------------------------------------------
class KernelLost(Exception):
    """The kernel died, or stayed busy after a timed-out cell was interrupted."""


class Execution:
    """One notebook, cell by cell, on one running kernel through nbclient (errors allowed: every
    cell runs; a cell past `cell_timeout` is interrupted)."""

    def __init__(self, client_class: Any, nb: Any, kernel: Any, kernel_client: Any, *, cell_timeout: int) -> None:
        self.timeout = cell_timeout
        self.client = client_class(
            nb,
            km=kernel,
            timeout=cell_timeout,
            allow_errors=True,
            interrupt_on_timeout=True,
            error_on_timeout={"ename": "TimeoutError", "evalue": f"the cell ran past {cell_timeout} s"},
            record_timing=False,
            iopub_timeout=INTERRUPT_GRACE,
        )
        self.client.kc = kernel_client
        self.client.seen = {}
        self.client.reset_execution_trackers()
        self.reply: dict[str, Any] | None = None
        self.client.on_cell_executed = self._executed

    def _executed(self, cell: Any, cell_index: int, execute_reply: Any) -> None:
        self.reply = execute_reply

    async def cell(self, cell: Any, index: int) -> str:
        """Execute one code cell; the reply as received (REPLY_*). KernelLost when it died, or
        stays busy after a timeout."""
        from nbclient.exceptions import DeadKernelError

        self.reply = None
        self.client.seen.pop(index, None)
        try:
            await self.client.async_execute_cell(cell, index, store_history=True)
        except DeadKernelError as error:
            raise KernelLost("the kernel died") from error
        reply: dict[str, Any] = self.reply or {}
        if "header" not in reply:  # nbclient's stand-in: no reply came within the timeout
            if not await self.silent("pass", INTERRUPT_GRACE):
                raise KernelLost(f"the kernel stayed busy after cell {index + 1} was interrupted at its timeout")
            return REPLY_TIMEOUT
        return REPLY_OK if reply.get("content", {}).get("status") == "ok" else REPLY_ERROR

    async def silent(self, code: str, timeout: float | None = None) -> bool:
        """Run code of the grader's own, unseen and not in the history; whether it succeeded."""
        reply = await self._request(code, {}, timeout)
        return reply is not None and reply.get("status") == "ok"

    async def evaluate(self, expression: str) -> str:
        """The text of `expression`'s value, evaluated by the kernel as a user expression of an
        empty request ("" when it failed or never came back)."""
        reply = await self._request("", {"value": expression}, None) or {}
        value = (reply.get("user_expressions") or {}).get("value") or {}
        if not isinstance(value, dict) or value.get("status") != "ok":
            return ""
        text = (value.get("data") or {}).get("text/plain", "")
        return text if isinstance(text, str) else ""

    async def _request(
        self, code: str, user_expressions: dict[str, str], timeout: float | None
    ) -> dict[str, Any] | None:
        """An execute request of the grader's own, silent and out of the history: its reply's
        content, or None when none came in time."""
        from queue import Empty

        kc = self.client.kc
        msg_id = kc.execute(
            code, silent=True, store_history=False, user_expressions=user_expressions, stop_on_error=False
        )
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            try:
                msg = await kc.shell_channel.get_msg(timeout=min(left, 1.0))
            except Empty:
                if not await kc.is_alive():
                    raise KernelLost("the kernel died") from None
                continue
            if msg.get("parent_header", {}).get("msg_id") == msg_id:
                content = msg.get("content")
                return content if isinstance(content, dict) else {}


async def feedback_execution(execution: Execution) -> str:
    """Every code cell in order; a note when the kernel was lost on the way."""
    for index, cell in enumerate(execution.client.nb.cells):
        if cell.get("cell_type") != "code":
            continue
        try:
            await execution.cell(cell, index)
        except KernelLost as lost:
            return str(lost)
    return ""


async def graded_execution(execution: Execution, progress: execute.Progress, report: Callable[[dict], None]) -> bool:
    """Every code cell in order, each test cell guarded and observed (`report` gets each one's
    observation as it ends). Returns whether every cell was executed."""
    key = f"_{secrets.token_hex(12)}"  # nothing in its name says what it is
    cells = execution.client.nb.cells
    tests = [index for index, cell in enumerate(cells) if is_test(cell)]
    try:
        if not await execution.silent(keep_hooks_code(key)):
            raise KernelLost("the grader could not prepare the kernel")
        for index, cell in enumerate(cells):
            if cell.get("cell_type") != "code":
                continue
            if index not in tests:
                instructors = not nbgrader_metadata(cell).get("solution")
                if instructors:  # run it as the instructor wrote it for: on the kept hooks
                    await execution.evaluate(reset_expression(key, secrets.token_hex(16)))
                progress.on_cell_start(cell, index)
                await execution.cell(cell, index)
                progress.on_cell_executed(cell, index, execution.reply)
                if instructors:  # what it installed (sympy's init_session, a transformer) is kept too
                    await execution.evaluate(capture_expression(key))
                continue
            token = secrets.token_hex(16)
            reset = read_reset(await execution.evaluate(reset_expression(key, token)), token)
            original, nonce = cell.source, secrets.token_hex(16)
            cell.source = with_proof(original, nonce)
            progress.on_cell_start(cell, index)
            started = time.monotonic()
            try:
                reply = await execution.cell(cell, index)
            finally:
                cell.source = original
            progress.on_cell_executed(cell, index, execution.reply)
            seen = execution.client.seen.get(index, Seen())
            seconds = time.monotonic() - started
            # Restored again right away: what changed while the test ran was not the test's doing
            # (a thread, a signal handler): named, and the test does not count (scoring).
            token = secrets.token_hex(16)
            after = read_reset(await execution.evaluate(reset_expression(key, token)), token)
            observation = observe(cell, seen, reply, nonce=nonce, reset=reset, seconds=seconds)
            report({**observation, "during": after.undone, "during_quiet": after.restored, "index": index})
            tests.remove(index)
    except KernelLost as lost:
        for index in tests:
            report({**unexecuted(cells[index], str(lost)), "index": index})
        return False
    return True
