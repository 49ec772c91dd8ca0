-- The inference engine serving a model (worker/engines.py), and the one each instance was started with:
-- copied from its model when it is asked for, so changing a model later never changes a running worker.
ALTER TABLE models ADD COLUMN engine text NOT NULL DEFAULT 'vllm'
    CHECK (engine IN ('vllm', 'sglang', 'llama_cpp', 'openai'));
ALTER TABLE instances ADD COLUMN engine text NOT NULL DEFAULT 'vllm'
    CHECK (engine IN ('vllm', 'sglang', 'llama_cpp', 'openai'));
