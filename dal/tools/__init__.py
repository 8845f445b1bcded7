"""The tools built on the public layers: migration, transfer (dump, load, copy), the integrity
check and the entity-relationship diagram. Nothing below imports them; the CLI sits on top.
"""
