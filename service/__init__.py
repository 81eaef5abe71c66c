"""`fastsam-stream serve`: the pipeline as a long-running service, over HTTP.

core (the Service the routes call), app (the routes), security (the guard in front of them),
server (uvicorn in a thread), frames (the latest frame of each stream, for the viewer), metrics
(Prometheus), static/ (the viewer's pages). Nothing is imported here: `fastsam-stream run` without
a control port never loads Starlette or uvicorn.
"""
