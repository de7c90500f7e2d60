-- The status last sent to KRT per driver (NULL: none yet, or only refused ones): an offline
-- status closes the shift opened by an online/busy one wherever the driver is.
ALTER TABLE deptrans.sent_marks ADD COLUMN status text;
