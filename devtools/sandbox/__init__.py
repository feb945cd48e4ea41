"""The sandbox: stateful offline stand-ins for the Microsoft identity platform, Microsoft Graph
and timum, which the real MSAL, azure-identity and msgraph-sdk talk to unchanged.

Not part of the deployed package (see ``.funcignore``).
"""
