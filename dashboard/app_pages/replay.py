"""Replay a tape (analysts): upload or pick a tape, run the backtest with a progress bar, then
browse its alerts and halts in the same pages (a store of its own) and export them."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import streamlit as st

from dashboard import fmt, replays, session, ui

st.title("Replay a tape")
session.require("analyst")

root = replays.root(ui.live_store_dir())
source = st.radio("Tape", ["Pick a tape on the server", "Upload a tape"], horizontal=True,
                  key="r_source")
tape: Path | None = None
if source == "Upload a tape":
    upload = st.file_uploader("Tape (.csv, .parquet, .jsonl, optionally .gz)",
                              type=["csv", "parquet", "jsonl", "gz"], key="r_upload")
    if upload is not None:
        tape = replays.save_upload(root, upload.name, upload.getvalue())
else:
    found = replays.tapes(root, Path.cwd())
    if found:
        tape = st.selectbox("Tape", found, key="r_pick", format_func=str)
    else:
        st.caption(f"No tapes found under `{root}` or the working directory: upload one.")

if tape is not None and st.button("Run the backtest", type="primary", key="r_run"):
    job = replays.Job(tape, root)
    thread = threading.Thread(target=job.run, daemon=True)
    thread.start()
    bar = st.progress(0.0, text="Reading the tape…")
    while thread.is_alive():
        bar.progress(job.fraction(), text=f"Judging {tape.name}: {job.status()}")
        time.sleep(0.3)
    thread.join()
    if job.error:
        st.error(f"The backtest failed: {job.error}")
    else:
        bar.progress(1.0, text="Done")
        st.session_state["store_override"] = str(job.store)
        st.success(f"{job.summary.get('alerts', 0)} alerts and {job.summary.get('halts', 0)} "
                   f"halts from {fmt.num(job.summary.get('trades_read', 0))} trades. Every page "
                   "now shows this replay (sidebar: back to the live store).")

st.subheader("Replays")
done = replays.done(root)
if not done:
    st.caption("No replays yet.")
for name, store in done:
    left, right = st.columns([4, 1])
    left.markdown(f"`{name}` · store `{store}`")
    if right.button("Browse", key=f"r_browse_{name}"):
        st.session_state["store_override"] = str(store)
        st.rerun()
st.caption("Alerts and cases export as CSV or Parquet from *Cases and audit*.")
