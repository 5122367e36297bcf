"""The outbound abuse guard: spot a phished account within seconds and stop its mail.

``detector`` (pure) decides, ``store`` remembers, ``policy`` and ``milter`` speak the MTA's
wire protocols, ``engine`` ties them together and ``actions`` locks accounts and alerts admins.
"""
