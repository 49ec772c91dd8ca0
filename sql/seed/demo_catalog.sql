-- The demo catalog, loaded idempotently by `inventiv seed` (and `inventiv up`): re-running it updates
-- the specs and prices it owns and never duplicates a row.

INSERT INTO providers (code, name) VALUES
    ('mock', 'Mock cloud (local worker processes)'),
    ('scaleway', 'Scaleway')
ON CONFLICT (code) DO UPDATE SET name = EXCLUDED.name;

INSERT INTO provider_settings (provider_id, worker_data_volume_gb_default, boot_image_labels)
SELECT id, NULL, CASE code WHEN 'scaleway' THEN ARRAY['ubuntu_jammy_gpu_os_12', 'ubuntu_noble', 'ubuntu_jammy']
                           ELSE ARRAY[]::text[] END
FROM providers WHERE code IN ('mock', 'scaleway')
ON CONFLICT (provider_id) DO NOTHING;

INSERT INTO zones (provider_id, code, name)
SELECT p.id, z.code, z.name
FROM providers p
JOIN (VALUES ('mock', 'local-1', 'Local machine'),
             ('scaleway', 'fr-par-1', 'Paris 1'),
             ('scaleway', 'fr-par-2', 'Paris 2'),
             ('scaleway', 'nl-ams-1', 'Amsterdam 1')) AS z (provider, code, name) ON z.provider = p.code
ON CONFLICT (provider_id, code) DO UPDATE SET name = EXCLUDED.name;

INSERT INTO instance_types (provider_id, code, name, gpu_count, gpu_model, vram_gb_per_gpu, cpu_count, ram_gb,
                            cost_per_hour)
SELECT p.id, t.code, t.name, t.gpus, t.gpu_model, t.vram, t.cpus, t.ram, t.price
FROM providers p
JOIN (VALUES
    ('mock', 'MOCK-GPU-S', 'Mock GPU small', 1, 'mock', 24, 2, 8, 0.0),
    ('mock', 'MOCK-GPU-M', 'Mock GPU medium', 2, 'mock', 48, 4, 16, 0.0),
    ('scaleway', 'L4-1-24G', 'L4 1x24GB', 1, 'NVIDIA L4', 24, 8, 48, 0.75),
    ('scaleway', 'L40S-1-48G', 'L40S 1x48GB', 1, 'NVIDIA L40S', 48, 8, 96, 1.40),
    ('scaleway', 'L40S-2-48G', 'L40S 2x48GB', 2, 'NVIDIA L40S', 48, 16, 192, 2.80),
    ('scaleway', 'H100-1-80G', 'H100 1x80GB', 1, 'NVIDIA H100 PCIe', 80, 24, 240, 2.73),
    ('scaleway', 'RENDER-S', 'Render S (P100)', 1, 'NVIDIA Tesla P100', 16, 10, 42, 1.221)
) AS t (provider, code, name, gpus, gpu_model, vram, cpus, ram, price) ON t.provider = p.code
ON CONFLICT (provider_id, code) DO UPDATE SET
    name = EXCLUDED.name, gpu_count = EXCLUDED.gpu_count, gpu_model = EXCLUDED.gpu_model,
    vram_gb_per_gpu = EXCLUDED.vram_gb_per_gpu, cpu_count = EXCLUDED.cpu_count, ram_gb = EXCLUDED.ram_gb,
    cost_per_hour = EXCLUDED.cost_per_hour;

-- Every type is offered in every zone of its provider.
INSERT INTO instance_type_zones (instance_type_id, zone_id)
SELECT t.id, z.id FROM instance_types t JOIN zones z ON z.provider_id = t.provider_id
ON CONFLICT DO NOTHING;

INSERT INTO models (name, hf_repo_id, parameter_count, context_length) VALUES
    ('Qwen2.5 0.5B Instruct', 'Qwen/Qwen2.5-0.5B-Instruct', 494000000, 32768),
    ('Qwen2.5 7B Instruct', 'Qwen/Qwen2.5-7B-Instruct', 7610000000, 32768),
    ('Qwen2.5 14B Instruct', 'Qwen/Qwen2.5-14B-Instruct', 14700000000, 32768)
ON CONFLICT (hf_repo_id) DO UPDATE SET
    name = EXCLUDED.name, parameter_count = EXCLUDED.parameter_count, context_length = EXCLUDED.context_length;

INSERT INTO organizations (slug, name) VALUES ('demo', 'Demo organization')
ON CONFLICT (slug) DO NOTHING;

INSERT INTO offerings (organization_id, model_id, model_code, visibility)
SELECT o.id, m.id, f.code, f.visibility
FROM organizations o
JOIN (VALUES ('qwen-small', 'Qwen/Qwen2.5-0.5B-Instruct', 'public'),
             ('qwen-7b', 'Qwen/Qwen2.5-7B-Instruct', 'private'),
             ('qwen-14b', 'Qwen/Qwen2.5-14B-Instruct', 'private')) AS f (code, repo, visibility) ON true
JOIN models m ON m.hf_repo_id = f.repo
WHERE o.slug = 'demo'
ON CONFLICT (organization_id, model_code) DO NOTHING;
