-- webhook_deliveries.event_id cascades from events (ON DELETE CASCADE) but had no index: retention
-- deleting old events scanned webhook_deliveries once per deleted event.

CREATE INDEX IF NOT EXISTS webhook_deliveries_event ON webhook_deliveries (event_id);
