"""The control-plane VM on Scaleway: `inventiv deploy provision | secrets sync | up | destroy | rebuild`.

Settings come from `deploy/env/<env>.env` (vm_settings.py); every bad setting is refused before any cloud
call. Pure decisions (what the root volume needs, which rules the group holds, what to delete) sit beside
the thin async code that carries them out over the Scaleway client (providers/scaleway/client.py) and SSH.
"""
