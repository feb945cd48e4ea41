"""ICS: the per-resource subscription feed (timum → Outlook without admin approval) and the
import of a published Outlook calendar (Outlook → timum without API access)."""
