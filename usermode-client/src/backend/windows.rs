//! The installed driver, `\\.\RingMap` (Windows).
