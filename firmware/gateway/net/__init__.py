# The gateway's network side: WiFi (network.WLAN) and the MQTT link to the hub.
