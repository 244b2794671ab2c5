"""A quiet, honest screen: --quiet reaches every bar, and third-party chatter goes to a log."""
from __future__ import annotations

import logging

from tqdm.auto import tqdm

from bench.evaluation.capture import output_to_log


def test_third_party_messages_and_bars_go_to_the_log(tmp_path, capfd):
    log = tmp_path / "lm_eval.log"
    with output_to_log(log):
        logging.getLogger("lm_eval.api.task").warning("arith_qa: Custom kwargs can be passed to `--metadata`")
        for _ in tqdm(range(3), desc="Running loglikelihood requests"):
            pass
        print("a stray print")
    out, err = capfd.readouterr()
    assert "Custom kwargs" not in out + err and "loglikelihood" not in out + err and "stray" not in out + err
    text = log.read_text()
    assert "Custom kwargs" in text and "Running loglikelihood requests" in text and "a stray print" in text
    logging.getLogger("lm_eval.api.task").warning("after")       # handlers restored
    assert "after" not in log.read_text()


def test_quiet_data_stage_draws_no_bar(tmp_path, capfd, fault_corpus):
    from bench.suite.load import load_suite
    from bench.run.prepare import data_stage
    from bench.run.store import StageStore

    suite_file = tmp_path / "s.yaml"
    suite_file.write_text(f"name: s\nseeds: [0]\ndata: {{source: preference, path: {fault_corpus.path}, "
                          "eval_prompts: 1, drift_pairs: 0}\nobjectives:\n  - name: dpo\n")
    data_stage(load_suite(suite_file), StageStore(tmp_path / "out"), progress=False)
    out, err = capfd.readouterr()
    assert "reading" not in err and "row/s" not in err and "it/s" not in err, err
