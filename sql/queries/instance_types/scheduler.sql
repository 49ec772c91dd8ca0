-- name: save-resolved-boot-image(instance_type_id, provider_code, boot_image_id, zone)!
-- Keeps whatever else allocation_params holds for this provider; the zone says where the id is valid
-- (Marketplace image ids are per zone), and an id configured by hand (no zone) is never overwritten.
UPDATE instance_types
SET allocation_params = allocation_params || jsonb_build_object(
        :provider_code::text,
        coalesce(allocation_params -> :provider_code::text, '{}'::jsonb)
            || jsonb_build_object('boot_image_id', :boot_image_id::text, 'boot_image_zone', :zone::text))
WHERE id = :instance_type_id
  AND (allocation_params #>> ARRAY[:provider_code::text, 'boot_image_id'] IS NULL
       OR allocation_params #>> ARRAY[:provider_code::text, 'boot_image_zone'] IS NOT NULL);
