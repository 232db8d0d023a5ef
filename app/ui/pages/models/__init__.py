"""The Models page: a repo's variants planned against this computer, with details."""
