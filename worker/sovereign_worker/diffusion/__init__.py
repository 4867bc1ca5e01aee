"""The diffusers engine: an OpenAI-compatible image server for Stable Diffusion pipelines.

`sovereign-worker serve --engine diffusers --model-dir DIR -- FLAGS` runs it. Its contract is
the vLLM engine's: `/health`, `/v1/models`, `/metrics` with `vllm:num_requests_running` and
`vllm:num_requests_waiting` (the names the autoscaler reads), bounded concurrency with a
queue, a drain on SIGTERM, and only local, digest-verified files.

Modules, lightest first: `launch` (the flag contract, pure; the renderer imports it),
`image_request` (request validation, pure), `admission` (the concurrency gate), `metrics`,
`model_dir` (what the verified folder must hold), `pipeline` (torch and diffusers, loaded
lazily) and `server` (aiohttp). Importing this package imports none of the heavy ones.
"""
