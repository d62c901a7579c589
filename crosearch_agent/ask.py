"""`python -m crosearch_agent.ask "question"`: one question, every step printed as it happens."""
from __future__ import annotations

import argparse
import sys

from crosearch_agent.config import Settings
from crosearch_agent.policy_folders import settings_from_command_line


def build_agent(settings: Settings, method: str = "crosearch"):
    """Policy + retriever + agent for the settings (shared by ask and eval)."""
    from crosearch_agent.agent import Agent
    from crosearch_agent.policy import load_policy
    from crosearch_agent.retriever import load_retriever

    retriever = load_retriever(settings)
    policy = load_policy(settings.backend, settings.policy, settings.base_url, **(
        {"seed": settings.seed} if (settings.backend or "") == "vllm" else {}))
    return Agent(policy, retriever, settings, method)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m crosearch_agent.ask", description=__doc__.splitlines()[0])
    parser.add_argument("question", help="the question, in any language")
    parser.add_argument("--method", default="crosearch", choices=["closed_book", "mono_rag", "concat_rag", "crosearch"],
                        help="the agent, or one of the evaluation baselines")
    Settings.add_arguments(parser)
    args = parser.parse_args(argv)
    settings = settings_from_command_line(args, argv)
    from crosearch_agent.agent import describe
    from crosearch_agent.policy_folders import describe_policy
    from crosearch_agent.policy import PolicyError
    from crosearch_agent.qa_data import DataNotFound
    from crosearch_agent.store import StoreError

    try:
        agent = build_agent(settings, args.method)
    except (StoreError, PolicyError, DataNotFound, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"policy: {describe_policy(agent.policy.name)} (backend: {agent.policy.backend})")
    print(f"collection: {settings.collection} ({', '.join(agent.retriever.languages)})")
    answer = None
    for step in agent.run(args.question):
        print(describe(step), flush=True)
        if step.kind == "answer":
            answer = step.text
        if step.kind == "error":
            return 1
    print(f"\nanswer: {answer}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
