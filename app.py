"""CroSearch chat app: `python app.py` (Gradio, http://127.0.0.1:7860).

The page comes up at once; the models and the default collection's indexes are prepared
afterwards (materialised and built on first start, by `engine.Engine`), and the chat says so
until they are ready. Each answer streams the agent's steps as panels; the evidence view
shows the passages of a turn with their languages. The same agent is served headless as the
API endpoint `/ask` (see README, "Headless use").
"""
from __future__ import annotations

import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no network here, and no telemetry

import argparse
import signal
import sys

from crosearch_agent.agent import EvidenceStep, SearchStep
from crosearch_agent.config import Settings, data_dir
from crosearch_agent.languages import NAMES, XQUAD_LANGS
from crosearch_agent.policy import BACKENDS
from crosearch_agent.policy_folders import (BUNDLED_POLICY, QWEN_POLICY, SHIPPED_PREFIX, describe_policy,
                                            latest_checkpoint, settings_from_command_line)

import app_views as views
from engine import Engine, Options, run_question

EXAMPLE_LANGS = ("de", "zh", "es", "ar", "ru", "hi", "vi", "el")
DEFAULT_POLICY = "default"  # the policy dropdown's "newest checkpoint, else bundled"


# ---------------------------------------------------------------- the page

def status_markdown(engine: Engine) -> str:
    """The status line above the chat."""
    if not engine.ready.is_set():
        return f"**Preparing the models and indexes…** ({engine.stage}). You can already type a question."
    if engine.error:
        return f"**CroSearch could not prepare its index:** {views.md_text(engine.error)}"
    policy = (f"policy {views.md_text(describe_policy(engine.policy.name))} ({engine.policy.backend})"
              if engine.policy.inner is not None
              else f"**no policy loaded:** {views.md_text(engine.policy.problem)}")
    cols = ", ".join(f"{c} ({len(r.languages)} languages)" for c, r in engine.retrievers.items())
    return f"Ready: {policy}; collection {views.md_text(cols)}."


def ask(engine: Engine, question: str, opts: Options | None = None) -> dict:
    """One question, start to end, as the JSON the API returns."""
    steps, note = [], ""
    for kind, step, extra in run_question(engine, question, opts or Options()):
        if kind == "step":
            steps.append(step)
            note = note or extra
    return views.turn_record(question, steps, note)


# ---------------------------------------------------------------- the page

def load_examples(langs=EXAMPLE_LANGS, split: str = "dev") -> list[tuple[str, str]]:
    """(label, question) pairs from XQuAD's dev split, one per language; none without the data."""
    if data_dir() is None:  # no local copy: never reach for the hub while building the page
        return []
    from crosearch_agent.qa_data import xquad_questions

    out = []
    for i, lang in enumerate(langs):
        try:
            qs = xquad_questions([lang], split)
        except Exception:  # a missing or unreadable file costs that example only
            continue
        if qs:
            q = qs[(i * 37) % len(qs)]  # different questions for different languages
            out.append((f"{NAMES[lang]}: {q.question}", q.question))
    return out


def collection_languages(collection: str) -> list[str]:
    """The languages of a built collection, from its manifest (cheap), else XQuAD's."""
    from crosearch_agent.store import collection_dir, read_manifest

    manifest = read_manifest(collection_dir(collection)) or {}
    return sorted(manifest.get("languages") or XQUAD_LANGS)


def built_collections() -> list[str]:
    from crosearch_agent.config import data_home

    root = data_home() / "indexes"
    return sorted(p.name for p in root.iterdir() if (p / "manifest.json").exists()) if root.is_dir() else []


def policy_choices() -> list[tuple[str, str]]:
    from crosearch_agent.bundled import shipped_base_id, shipped_policies, shipped_policy_artifact

    choices = [("default: your newest checkpoint, else the shipped trained policy", DEFAULT_POLICY)]
    for name in shipped_policies():
        over_qwen = shipped_base_id(shipped_policy_artifact(name)) == QWEN_POLICY
        note = "; over Qwen2.5-Coder 1.5B: reads best, ~5x slower, 1.1 GB fetched on first use" if over_qwen else ""
        choices.append((f"shipped trained policy ({name}{note})", SHIPPED_PREFIX + name))
    choices.append(("raw bundled Gemma 3 270M (untrained)", BUNDLED_POLICY))
    choices.append(("bundled Qwen2.5-Coder 1.5B (untrained, reads better, ~4x slower; 1.1 GB fetched on first use)",
                    QWEN_POLICY))
    if (ckpt := latest_checkpoint()) is not None:
        choices.append((f"newest checkpoint: {ckpt.name}", str(ckpt)))
    return choices


def build_ui(engine: Engine, examples: list[tuple[str, str]] | None = None):
    import gradio as gr

    s = engine.settings
    langs = collection_languages(s.collection)
    collections = list(dict.fromkeys([s.collection] + built_collections()))

    with gr.Blocks(title="CroSearch") as demo:
        gr.Markdown("## CroSearch — ask in your language, answered from evidence in every language")
        status = gr.Markdown(status_markdown(engine), elem_id="cs-status")
        records = gr.State([])
        with gr.Row():
            with gr.Column(scale=3):
                chat = gr.Chatbot(label="Chat", elem_id="cs-chat", height=620, latex_delimiters=[], allow_tags=False,
                                  feedback_options=None, buttons=["copy"])
                with gr.Row():
                    box = gr.Textbox(placeholder="Ask a question in any language…", show_label=False, scale=5,
                                     elem_id="cs-input", max_lines=6)
                    send = gr.Button("Ask", variant="primary", scale=1, elem_id="cs-send")
                if examples:
                    gr.Examples([[q] for _, q in examples], inputs=[box], label="Examples (XQuAD dev)",
                                example_labels=[label for label, _ in examples])
            with gr.Column(scale=2):
                turn = gr.Dropdown(choices=[], label="Evidence of turn", elem_id="cs-turn", interactive=True)
                summary = gr.Markdown("", elem_id="cs-summary")
                evidence = gr.HTML(views.evidence_html(None), elem_id="cs-evidence")
        with gr.Accordion("Settings", open=False):
            with gr.Row():
                collection = gr.Dropdown(collections, value=s.collection, label="Collection", allow_custom_value=True,
                                         elem_id="cs-collection")
                k = gr.Slider(1, 10, value=s.k, step=1, label="Top-k evidence per search")
                max_turns = gr.Slider(1, 6, value=s.max_turns, step=1, label="Max search turns")
                temperature = gr.Slider(0.0, 1.5, value=s.temperature, step=0.1, label="Temperature")
            languages = gr.CheckboxGroup(langs, value=[l for l in langs if not s.languages or l in s.languages],
                                         label="Languages to search")
            with gr.Row():
                backend = gr.Dropdown(list(BACKENDS), value=engine.backend, label="Backend")
                policy = gr.Dropdown(policy_choices(), value=s.policy or DEFAULT_POLICY, label="Policy",
                                     allow_custom_value=True)
                base_url = gr.Textbox(s.base_url or "", label="Base URL (openai backend)")
                reload = gr.Button("Reload policy")
        timer = gr.Timer(1.0)

        def tick():
            return status_markdown(engine), gr.Timer(active=not engine.ready.is_set())

        def respond(message, history, recs, coll, langs_, k_, turns_, temp_):
            history = list(history or [])
            shown_q = views.one_line(message or "", 500) or "(empty)"
            history.append({"role": "user", "content": views.md_text(shown_q)})
            opts = Options(coll or None, list(langs_ or []) or None, int(k_), int(turns_), float(temp_))
            msgs, steps, note = [], [], ""
            pending_search = None
            # Only the first update empties the box: later ones must not wipe what the user
            # has started typing while this answer streams.
            clear = iter([""])
            for kind, payload, extra in run_question(engine, message or "", opts):
                if msgs and msgs[-1].metadata.get("status") == "pending" and msgs[-1] is not pending_search:
                    msgs.pop()  # the "working…" placeholder
                if kind == "wait":
                    msgs.append(views.working_message(f"Preparing the models and indexes… ({payload})"))
                    yield history + msgs, next(clear, gr.skip()), recs, gr.skip(), gr.skip(), gr.skip()
                    continue
                step = payload
                steps.append(step)
                note = note or extra
                if isinstance(step, EvidenceStep) and pending_search is not None:
                    views.finish_search(pending_search, step.duration_s)
                    pending_search = None
                msgs.append(views.step_message(step, extra))
                if isinstance(step, SearchStep):
                    pending_search = msgs[-1]
                elif step.kind not in ("answer", "error"):
                    msgs.append(views.working_message())
                yield history + msgs, next(clear, gr.skip()), recs, gr.skip(), gr.skip(), gr.skip()
            record = views.turn_record(message or "", steps, note)
            recs = list(recs or []) + [record]
            choices = views.turn_choices(recs)
            yield (history + msgs, next(clear, gr.skip()), recs, gr.Dropdown(choices=choices, value=len(recs) - 1),
                   views.summary_markdown(record), views.evidence_html(record))

        def show_turn(recs, index):
            if not recs or index is None:
                return "", views.evidence_html(None)
            record = recs[int(index)]
            return views.summary_markdown(record), views.evidence_html(record)

        def on_collection(coll):
            langs_ = collection_languages(coll)
            return gr.CheckboxGroup(choices=langs_, value=langs_)

        def on_reload(backend_, policy_, url_):
            yield "**Reloading the policy…**", gr.skip()
            name = None if policy_ in (None, "", DEFAULT_POLICY) else policy_
            message = engine.submit(engine.load_policy, backend_, name, url_ or None).result()
            engine.log(f"[crosearch] reload: {message}")
            yield f"{status_markdown(engine)}  \nReload: {views.md_text(message)}", gr.Dropdown(choices=policy_choices())

        inputs = [box, chat, records, collection, languages, k, max_turns, temperature]
        outputs = [chat, box, records, turn, summary, evidence]
        for trigger in (box.submit, send.click):
            trigger(respond, inputs, outputs, concurrency_id="agent", api_visibility="private")
        turn.change(show_turn, [records, turn], [summary, evidence], concurrency_limit=None, api_visibility="private")
        collection.change(on_collection, [collection], [languages], concurrency_limit=None, api_visibility="private")
        reload.click(on_reload, [backend, policy, base_url], [status, policy], concurrency_limit=1, api_visibility="private")
        timer.tick(tick, None, [status, timer], concurrency_limit=None, api_visibility="private")
        demo.load(tick, None, [status, timer], concurrency_limit=None, api_visibility="private")

        def ask_endpoint(question: str, languages: str = "", collection: str = "") -> dict:
            """Ask CroSearch one question. `languages`: optional comma-separated codes to search
            (default: every indexed language); `collection`: optional name of a built collection
            (default: the app's). Returns the answer, its language, every step, the evidence, the
            answer's support and the versions' agreement as JSON."""
            chosen = [l.strip() for l in (languages or "").split(",") if l.strip()]
            return ask(engine, question, Options(collection.strip() or None, chosen or None))

        gr.api(ask_endpoint, api_name="ask", concurrency_id="agent")
    return demo


# ---------------------------------------------------------------- command line

def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python app.py", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    parser.add_argument("--port", type=int, default=7860, help="port to listen on (default: %(default)s)")
    parser.add_argument("--share", action="store_true", help="also open a public Gradio share link (off by default)")
    parser.add_argument("--concurrency", type=int, default=None,
                        help="questions answered at once (default: 4 for in-process backends, 8 for openai)")
    Settings.add_arguments(parser)
    return parser.parse_args(argv)


def stop(signum, frame):
    """SIGTERM stops the app as Ctrl-C does, so the policy is closed (vLLM's engine runs in
    processes of its own that would otherwise outlive the app)."""
    raise KeyboardInterrupt


def main(argv=None) -> int:
    args = parse_args(argv)
    settings = settings_from_command_line(args, argv)
    engine = Engine(settings)
    demo = build_ui(engine, load_examples())
    # Generation is serialised (and batched) by ServedPolicy; this bounds how many questions
    # hold a worker at once, so retrieval and the page stay responsive.
    limit = args.concurrency or (8 if engine.backend == "openai" else 4)
    demo.queue(default_concurrency_limit=limit)
    try:
        demo.launch(server_name=args.host, server_port=args.port, share=args.share, prevent_thread_lock=True,
                    ssr_mode=False, css=views.EVIDENCE_CSS, footer_links=["api"], quiet=True)
    except OSError as err:
        print(f"error: cannot serve on {args.host}:{args.port}: {err}", file=sys.stderr)
        return 1
    print(f"CroSearch is up at http://{args.host}:{args.port} — preparing the models and indexes…", flush=True)
    engine.submit(engine.prepare)
    signal.signal(signal.SIGTERM, stop)
    try:
        engine.work()
    except KeyboardInterrupt:
        print("stopping", flush=True)
    finally:
        demo.close()
        engine.policy.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
